//! The throw-away PKI of the test control plane, generated in memory with `rcgen` and written as
//! PEM files into `<env>/pki/`:
//!
//! | file | what | used by |
//! |---|---|---|
//! | `ca.crt` / `ca.key` | one self-signed ECDSA P-256 CA | apiserver `--client-ca-file`, KCM `--root-ca-file`, every client's trust root |
//! | `apiserver.crt` / `.key` | serving cert for `127.0.0.1`, `localhost`, `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`, `kubernetes.default.svc.cluster.local`, `10.0.0.1` | apiserver `--tls-cert-file` / `--tls-private-key-file` |
//! | `sa.key` / `sa.pub` | ECDSA P-256 service-account signing key (PKCS#8) and its public key (SPKI) | apiserver `--service-account-signing-key-file` (ES256 tokens) and `--service-account-key-file` (verification), KCM `--service-account-private-key-file` |
//! | `admin.crt` / `.key` | client cert CN=`admin`, O=`system:masters` | the admin kubeconfig (tests, kubectl, KCM) |
//!
//! One CA signs both the serving and the client certificates: nothing here needs them separate.
//! ECDSA P-256 is what `rcgen` generates with `ring`, and the apiserver, KCM and kube-rs' rustls
//! all accept it. `--service-account-key-file` gets the public key: kube-apiserver 1.36 rejects the
//! PKCS#8 private key there ("data does not contain any valid RSA or ECDSA public keys").
//! Validity: rcgen's defaults (1975 to 4096), so no clock trouble.
//!
//! It must not decide *where* the files go beyond the directory it is given, nor start anything.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// DNS names and IPs in the apiserver's serving certificate.
pub const APISERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    // The first IP of `--service-cluster-ip-range=10.0.0.0/24`, the `kubernetes` Service's IP.
    "10.0.0.1",
];

/// The admin client certificate's user name (CN).
pub const ADMIN_USER: &str = "admin";
/// The admin client certificate's group (O): bound to `cluster-admin` by the bootstrap RBAC.
pub const ADMIN_GROUP: &str = "system:masters";

/// Errors generating or writing the PKI.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen refused the parameters or failed to sign.
    #[error("cannot generate the {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// The rcgen error.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct CertKey {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
}

/// The whole PKI in memory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA.
    pub ca: CertKey,
    /// The apiserver's serving certificate.
    pub apiserver: CertKey,
    /// The admin client certificate (CN=`admin`, O=`system:masters`).
    pub admin: CertKey,
    /// The service-account token signing key (PKCS#8 PEM).
    pub service_account_key_pem: String,
    /// Its public key (SubjectPublicKeyInfo PEM, `-----BEGIN PUBLIC KEY-----`).
    pub service_account_public_pem: String,
}

/// Paths of the PEM files written by [`Pki::write_to`].
#[derive(Debug, Clone)]
pub struct PkiFiles {
    /// The directory holding them.
    pub dir: PathBuf,
    /// `ca.crt`.
    pub ca_cert: PathBuf,
    /// `ca.key`.
    pub ca_key: PathBuf,
    /// `apiserver.crt`.
    pub apiserver_cert: PathBuf,
    /// `apiserver.key`.
    pub apiserver_key: PathBuf,
    /// `admin.crt`.
    pub admin_cert: PathBuf,
    /// `admin.key`.
    pub admin_key: PathBuf,
    /// `sa.key`.
    pub service_account_key: PathBuf,
    /// `sa.pub`.
    pub service_account_public_key: PathBuf,
}

impl Pki {
    /// Generates a fresh CA, serving cert, admin client cert and service-account key.
    pub fn generate() -> Result<Self, CertsError> {
        Self::generate_with_sans(&[])
    }

    /// Like [`Pki::generate`], with `extra_sans` (IPs or DNS names) added to the apiserver's
    /// serving certificate, e.g. the non-loopback address a real node reaches it on.
    pub fn generate_with_sans(extra_sans: &[String]) -> Result<Self, CertsError> {
        let generate = |what| move |source| CertsError::Generate { what, source };

        let ca_key = KeyPair::generate().map_err(generate("CA key"))?;
        let ca_params = ca_params();
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(generate("CA certificate"))?;
        let ca = CertKey {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate().map_err(generate("apiserver key"))?;
        let mut serving = CertificateParams::new(
            APISERVER_SANS
                .iter()
                .map(|s| (*s).to_owned())
                .chain(extra_sans.iter().cloned())
                .collect::<Vec<_>>(),
        )
        .map_err(generate("apiserver certificate parameters"))?;
        serving.distinguished_name = name("kube-apiserver", None);
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.use_authority_key_identifier_extension = true;
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .map_err(generate("apiserver certificate"))?;

        let admin_key = KeyPair::generate().map_err(generate("admin key"))?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name = name(ADMIN_USER, Some(ADMIN_GROUP));
        admin.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.use_authority_key_identifier_extension = true;
        let admin_cert = admin
            .signed_by(&admin_key, &issuer)
            .map_err(generate("admin certificate"))?;

        let sa_key = KeyPair::generate().map_err(generate("service-account key"))?;

        Ok(Self {
            ca,
            apiserver: CertKey {
                cert_pem: serving_cert.pem(),
                key_pem: serving_key.serialize_pem(),
            },
            admin: CertKey {
                cert_pem: admin_cert.pem(),
                key_pem: admin_key.serialize_pem(),
            },
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
        })
    }

    /// Issues a certificate signed by this PKI's CA: CN=`common_name`, O=`organization`, with
    /// `sans` (IPs or DNS names; empty for a pure client certificate) and the given usage.
    /// Used for the identities of a real node (kubelet, kube-proxy, kube-scheduler, ...).
    pub fn issue(
        &self,
        common_name: &str,
        organization: Option<&str>,
        sans: &[String],
        usage: CertUsage,
    ) -> Result<CertKey, CertsError> {
        let generate = |what| move |source| CertsError::Generate { what, source };
        let ca_key = KeyPair::from_pem(&self.ca.key_pem).map_err(generate("CA key (reloaded)"))?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().map_err(generate("issued key"))?;
        let mut params = CertificateParams::new(sans.to_vec())
            .map_err(generate("issued certificate parameters"))?;
        params.distinguished_name = name(common_name, organization);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match usage {
            CertUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            CertUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            CertUsage::ClientAndServer => vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generate("issued certificate"))?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the PEM files into `dir` (created if missing; keys get mode 0600).
    pub fn write_to(&self, dir: &Path) -> Result<PkiFiles, CertsError> {
        std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let files = PkiFiles {
            dir: dir.to_owned(),
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver_cert: dir.join("apiserver.crt"),
            apiserver_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            service_account_key: dir.join("sa.key"),
            service_account_public_key: dir.join("sa.pub"),
        };
        write(&files.ca_cert, &self.ca.cert_pem, false)?;
        write(&files.ca_key, &self.ca.key_pem, true)?;
        write(&files.apiserver_cert, &self.apiserver.cert_pem, false)?;
        write(&files.apiserver_key, &self.apiserver.key_pem, true)?;
        write(&files.admin_cert, &self.admin.cert_pem, false)?;
        write(&files.admin_key, &self.admin.key_pem, true)?;
        write(
            &files.service_account_key,
            &self.service_account_key_pem,
            true,
        )?;
        write(
            &files.service_account_public_key,
            &self.service_account_public_pem,
            false,
        )?;
        Ok(files)
    }
}

/// What an issued certificate is for (its extended key usage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertUsage {
    /// TLS client authentication.
    Client,
    /// TLS server authentication.
    Server,
    /// Both.
    ClientAndServer,
}

/// The CA's parameters. [`Pki::issue`] rebuilds the issuer from them and the CA key: the
/// signature and the authority key identifier depend only on the key and the subject.
fn ca_params() -> CertificateParams {
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("testenv-ca", Some("testenv"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
}

/// Writes `contents` to `path` (mode 0600 when `private`), for PEM files outside [`Pki::write_to`].
pub fn write_pem(path: &Path, contents: &str, private: bool) -> Result<(), CertsError> {
    write(path, contents, private)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| CertsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::File::options();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_pem_and_writes_files() {
        let pki = Pki::generate().unwrap();
        assert!(pki.ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.apiserver.key_pem.contains("PRIVATE KEY"));
        assert!(pki.service_account_key_pem.contains("PRIVATE KEY"));
        assert_ne!(pki.ca.cert_pem, pki.admin.cert_pem);

        let dir = tempfile::tempdir().unwrap();
        let files = pki.write_to(&dir.path().join("pki")).unwrap();
        let ca = std::fs::read_to_string(&files.ca_cert).unwrap();
        assert_eq!(ca, pki.ca.cert_pem);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&files.admin_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
