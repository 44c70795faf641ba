//! Names of the span, metric and log attributes the runner emits: the OpenTelemetry GenAI
//! semantic conventions plus the `traceloop.*` / `llm.*` names the OpenLLMetry (Traceloop) SDK
//! emits, so dashboards built on either keep working. One place, so a name is spelled once.
//!
//! The contract is the Telemetry section of `docs/job-runner.md`; change both together.

/// `gen_ai.operation.name`.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name`.
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.system` (deprecated name of the provider, still queried by OpenLLMetry dashboards).
pub const GEN_AI_SYSTEM: &str = "gen_ai.system";
/// `gen_ai.request.model`.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.request.temperature`.
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// `gen_ai.request.top_p`.
pub const GEN_AI_REQUEST_TOP_P: &str = "gen_ai.request.top_p";
/// `gen_ai.request.max_tokens`.
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `gen_ai.request.seed`.
pub const GEN_AI_REQUEST_SEED: &str = "gen_ai.request.seed";
/// `gen_ai.request.stop_sequences` (string array).
pub const GEN_AI_REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
/// `gen_ai.request.frequency_penalty`.
pub const GEN_AI_REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
/// `gen_ai.request.presence_penalty`.
pub const GEN_AI_REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
/// `gen_ai.request.choice.count` (`n`).
pub const GEN_AI_REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
/// `gen_ai.request.reasoning_effort` (as OpenLLMetry sets it).
pub const GEN_AI_REQUEST_REASONING_EFFORT: &str = "gen_ai.request.reasoning_effort";
/// `gen_ai.output.type`: `text` or `json`, from the requested response format.
pub const GEN_AI_OUTPUT_TYPE: &str = "gen_ai.output.type";
/// `gen_ai.request.structured_output_schema` (OpenLLMetry; content capture `full`).
pub const GEN_AI_REQUEST_STRUCTURED_OUTPUT_SCHEMA: &str = "gen_ai.request.structured_output_schema";
/// `openai.request.service_tier`.
pub const OPENAI_REQUEST_SERVICE_TIER: &str = "openai.request.service_tier";
/// `gen_ai.openai.request.service_tier` (the older semconv name, still queried).
pub const GEN_AI_OPENAI_REQUEST_SERVICE_TIER: &str = "gen_ai.openai.request.service_tier";
/// `gen_ai.openai.response.service_tier` (the older semconv name, still queried).
pub const GEN_AI_OPENAI_RESPONSE_SERVICE_TIER: &str = "gen_ai.openai.response.service_tier";
/// `gen_ai.openai.api_version` (OpenLLMetry: Azure's `api-version`).
pub const GEN_AI_OPENAI_API_VERSION: &str = "gen_ai.openai.api_version";
/// `llm.frequency_penalty` (OpenLLMetry).
pub const LLM_FREQUENCY_PENALTY: &str = "llm.frequency_penalty";
/// `llm.presence_penalty` (OpenLLMetry).
pub const LLM_PRESENCE_PENALTY: &str = "llm.presence_penalty";
/// `llm.user` (OpenLLMetry; content capture `full`: it identifies a person).
pub const LLM_USER: &str = "llm.user";
/// `llm.request.functions` (OpenLLMetry): prefix of `.<i>.name` / `.description` /
/// `.parameters` of each requested tool (content capture `full`).
pub const LLM_REQUEST_FUNCTIONS: &str = "llm.request.functions";
/// `gen_ai.request.stream`.
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
/// `gen_ai.response.id`.
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.model`.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.finish_reasons` (string array).
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.response.finish_reason` (metric attribute of the choices counter).
pub const GEN_AI_RESPONSE_FINISH_REASON: &str = "gen_ai.response.finish_reason";
/// `gen_ai.response.time_to_first_chunk`, seconds.
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `gen_ai.usage.input_tokens`.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.usage.cache_read.input_tokens`.
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// `gen_ai.usage.reasoning.output_tokens`.
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
/// `gen_ai.token.type` (metric attribute: `input` / `output`).
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";
/// `gen_ai.input.messages` (content capture `full`).
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// `gen_ai.output.messages` (content capture `full`).
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// `gen_ai.openai.api_base` (legacy OpenLLMetry name of the base URL).
pub const GEN_AI_OPENAI_API_BASE: &str = "gen_ai.openai.api_base";
/// `openai.response.service_tier`.
pub const OPENAI_RESPONSE_SERVICE_TIER: &str = "openai.response.service_tier";
/// `openai.response.system_fingerprint`.
pub const OPENAI_RESPONSE_SYSTEM_FINGERPRINT: &str = "openai.response.system_fingerprint";
/// `server.address`.
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`.
pub const SERVER_PORT: &str = "server.port";
/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// `http.response.status_code`.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";

/// `llm.request.type` (OpenLLMetry).
pub const LLM_REQUEST_TYPE: &str = "llm.request.type";
/// `llm.is_streaming` (OpenLLMetry).
pub const LLM_IS_STREAMING: &str = "llm.is_streaming";
/// `llm.usage.total_tokens` (OpenLLMetry).
pub const LLM_USAGE_TOTAL_TOKENS: &str = "llm.usage.total_tokens";
/// `traceloop.workflow.name`.
pub const TRACELOOP_WORKFLOW_NAME: &str = "traceloop.workflow.name";
/// `traceloop.span.kind`.
pub const TRACELOOP_SPAN_KIND: &str = "traceloop.span.kind";
/// `traceloop.entity.name`.
pub const TRACELOOP_ENTITY_NAME: &str = "traceloop.entity.name";
/// `traceloop.entity.path`.
pub const TRACELOOP_ENTITY_PATH: &str = "traceloop.entity.path";
/// `traceloop.entity.input` (content capture `full`).
pub const TRACELOOP_ENTITY_INPUT: &str = "traceloop.entity.input";
/// `traceloop.entity.output` (content capture `full`).
pub const TRACELOOP_ENTITY_OUTPUT: &str = "traceloop.entity.output";

/// `llmjob.attempts` on the task span: HTTP attempts made.
pub const LLMJOB_ATTEMPTS: &str = "llmjob.attempts";
/// `llmjob.attempt` on a chat span: its 1-based attempt number.
pub const LLMJOB_ATTEMPT: &str = "llmjob.attempt";
/// `llmjob.retry.delay_ms` on the retry event: the wait before the next attempt.
pub const LLMJOB_RETRY_DELAY_MS: &str = "llmjob.retry.delay_ms";
/// `llmjob.item.id` on a batch item's task span and logs: the item's id.
pub const LLMJOB_ITEM_ID: &str = "llmjob.item.id";
/// `llmjob.item.index` on a batch item's task span and logs: its position in the batch, from 0.
pub const LLMJOB_ITEM_INDEX: &str = "llmjob.item.index";
/// `llmjob.shard.index` on a batch pod's workflow span: its shard (`JOB_COMPLETION_INDEX`).
pub const LLMJOB_SHARD_INDEX: &str = "llmjob.shard.index";
/// `llmjob.shard.items` on a batch pod's workflow span: the items of its shard.
pub const LLMJOB_SHARD_ITEMS: &str = "llmjob.shard.items";
/// `llmjob.shard.failed` on a batch pod's workflow span: the items of its shard that failed.
pub const LLMJOB_SHARD_FAILED: &str = "llmjob.shard.failed";
/// `llmjob.input.sha256` (content capture `hash`).
pub const LLMJOB_INPUT_SHA256: &str = "llmjob.input.sha256";
/// `llmjob.output.sha256` (content capture `hash`).
pub const LLMJOB_OUTPUT_SHA256: &str = "llmjob.output.sha256";

/// Resource: `deployment.environment.name`.
pub const DEPLOYMENT_ENVIRONMENT_NAME: &str = "deployment.environment.name";
/// Resource: the legacy `deployment.environment`.
pub const DEPLOYMENT_ENVIRONMENT: &str = "deployment.environment";
/// Resource: `service.name`.
pub const SERVICE_NAME: &str = "service.name";
/// Resource: `service.version`.
pub const SERVICE_VERSION: &str = "service.version";
/// Resource: `service.instance.id`.
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// The workflow's name (`@workflow(name="llm_job")` in the reference).
pub const WORKFLOW: &str = "llm_job";
/// The task's name (`@task(name="openai_call")` in the reference).
pub const TASK: &str = "openai_call";
/// The provider of the OpenAI API, and of any server not recognised by
/// [`crate::openai::provider_of`].
pub const PROVIDER: &str = "openai";
/// The operation.
pub const OPERATION_CHAT: &str = "chat";
/// The span event recorded on the task span before each retry.
pub const EVENT_RETRY: &str = "llmjob.retry";
/// The log event carrying the captured messages (content capture `full` / `hash`).
pub const EVENT_OPERATION_DETAILS: &str = "gen_ai.client.inference.operation.details";
