-- Argo CD resource health check for llmjob.dev/LlmJob.
--
-- Install: paste this script under `resource.customizations.health.llmjob.dev_LlmJob` in the
-- argocd-cm ConfigMap (argocd-cm-health-llmjob.yaml next to this file holds exactly that).
-- Argo CD runs it with gopher-lua (Lua 5.1): no goto, no integer division, no utf8 library.
--
-- Mapping, first match wins:
--   no status yet, or status.observedGeneration < metadata.generation  -> Progressing
--   phase Succeeded (or condition Succeeded=True)                       -> Healthy
--   phase Failed (or Failed=True / Stalled=True)                        -> Degraded
--   phase Suspended, or spec.suspend == true                            -> Suspended
--   phase Pending / Running / anything else in flight                   -> Progressing
-- The message is the most telling condition's message (or reason), else a short sentence.

local hs = {}

local function condition(status, ctype)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message_of(c, fallback)
  if c ~= nil then
    if c.message ~= nil and c.message ~= "" then
      return c.message
    end
    if c.reason ~= nil and c.reason ~= "" then
      return c.reason
    end
  end
  return fallback
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
local suspended_spec = obj.spec ~= nil and obj.spec.suspend == true

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe the LlmJob"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase or ""
local succeeded = condition(status, "Succeeded")
local failed = condition(status, "Failed")
local stalled = condition(status, "Stalled")
local ready = condition(status, "Ready")

if phase == "Succeeded" or is_true(succeeded) then
  hs.status = "Healthy"
  hs.message = message_of(succeeded, message_of(ready, "The LLM call succeeded"))
  return hs
end

if phase == "Failed" or is_true(failed) or is_true(stalled) then
  hs.status = "Degraded"
  local c = failed
  if not is_true(c) then
    c = stalled
  end
  hs.message = message_of(c, message_of(ready, "The LLM job failed"))
  return hs
end

if phase == "Suspended" or suspended_spec or is_true(condition(status, "Suspended")) then
  hs.status = "Suspended"
  hs.message = message_of(condition(status, "Suspended"), "The LlmJob is suspended")
  return hs
end

hs.status = "Progressing"
if phase == "" then
  hs.message = message_of(condition(status, "Reconciling"), "Waiting for the run to start")
else
  hs.message = message_of(condition(status, "Reconciling"), message_of(ready, "The LlmJob is " .. phase))
end
return hs
