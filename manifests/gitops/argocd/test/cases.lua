-- Status samples for health-llmjob.lua: one or more per phase and per edge case.
-- Each case: name, obj (the LlmJob as Argo CD passes it), want (hs.status), msg (a substring
-- hs.message must contain).

local function job(generation, status, spec)
  return {
    apiVersion = "llmjob.dev/v1alpha1",
    kind = "LlmJob",
    metadata = { name = "haiku", namespace = "default", generation = generation },
    spec = spec or { model = "gpt-4o-mini" },
    status = status,
  }
end

local function cond(ctype, status, reason, message)
  return { type = ctype, status = status, reason = reason, message = message }
end

return {
  {
    name = "no status yet",
    obj = job(1, nil),
    want = "Progressing",
    msg = "Waiting for the operator",
  },
  {
    name = "status of an older generation",
    obj = job(3, { observedGeneration = 2, phase = "Succeeded" }),
    want = "Progressing",
    msg = "generation 3",
  },
  {
    name = "status without observedGeneration",
    obj = job(1, { phase = "Succeeded" }),
    want = "Progressing",
    msg = "generation 1",
  },
  {
    name = "pending, waiting for the Secret",
    obj = job(1, {
      observedGeneration = 1,
      phase = "Pending",
      conditions = {
        cond("Ready", "False", "SecretNotFound", "Secret default/openai-api-key not found"),
        cond("Reconciling", "True", "SecretNotFound", "Waiting for Secret default/openai-api-key"),
      },
    }),
    want = "Progressing",
    msg = "Waiting for Secret default/openai-api-key",
  },
  {
    name = "running",
    obj = job(1, {
      observedGeneration = 1,
      phase = "Running",
      conditions = { cond("Ready", "False", "Running", "Job haiku-run is running") },
    }),
    want = "Progressing",
    msg = "Job haiku-run is running",
  },
  {
    name = "empty phase",
    obj = job(1, { observedGeneration = 1 }),
    want = "Progressing",
    msg = "Waiting for the run to start",
  },
  {
    name = "succeeded",
    obj = job(2, {
      observedGeneration = 2,
      phase = "Succeeded",
      conditions = {
        cond("Ready", "True", "Succeeded", "The run finished: 42 tokens"),
        cond("Succeeded", "True", "Completed", "Completion received (finish reason stop)"),
      },
    }),
    want = "Healthy",
    msg = "finish reason stop",
  },
  {
    name = "succeeded by condition only",
    obj = job(1, {
      observedGeneration = 1,
      conditions = { cond("Succeeded", "True", "Completed", nil) },
    }),
    want = "Healthy",
    msg = "Completed",
  },
  {
    name = "failed",
    obj = job(1, {
      observedGeneration = 1,
      phase = "Failed",
      conditions = {
        cond("Ready", "False", "Failed", "run failed"),
        cond("Failed", "True", "AuthenticationError", "OpenAI answered 401 Unauthorized"),
      },
    }),
    want = "Degraded",
    msg = "401",
  },
  {
    name = "stalled on an invalid spec (kstatus)",
    obj = job(1, {
      observedGeneration = 1,
      phase = "Pending",
      conditions = { cond("Stalled", "True", "InvalidSpec", "prompt and messages are exclusive") },
    }),
    want = "Degraded",
    msg = "exclusive",
  },
  {
    name = "failed phase without conditions",
    obj = job(1, { observedGeneration = 1, phase = "Failed" }),
    want = "Degraded",
    msg = "failed",
  },
  {
    name = "suspended phase",
    obj = job(1, {
      observedGeneration = 1,
      phase = "Suspended",
      conditions = { cond("Suspended", "True", "Suspended", "Waiting for Kueue to admit the workload") },
    }),
    want = "Suspended",
    msg = "Kueue",
  },
  {
    name = "spec.suspend before the operator sets a phase",
    obj = job(1, { observedGeneration = 1, phase = "Pending" }, { model = "gpt-4o-mini", suspend = true }),
    want = "Suspended",
    msg = "suspended",
  },
  {
    name = "succeeded wins over spec.suspend",
    obj = job(1, { observedGeneration = 1, phase = "Succeeded" }, { suspend = true }),
    want = "Healthy",
    msg = "succeeded",
  },
}
