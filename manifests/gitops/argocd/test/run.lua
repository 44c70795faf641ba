-- Test harness for ../health-llmjob.lua, runnable with Lua 5.1 (Argo CD's gopher-lua dialect)
-- through 5.4: `lua run.lua` from this directory, or `lua run.lua <dir of health-llmjob.lua>`.
-- Prints one line per case and a closing "N passed, N failed"; exits non-zero on any failure.

local dir = arg[1] or ".."
local script_path = dir .. "/health-llmjob.lua"
local script, err = loadfile(script_path)
if script == nil then
  io.stderr:write("cannot load " .. script_path .. ": " .. tostring(err) .. "\n")
  os.exit(2)
end
local cases_chunk, cerr = loadfile((arg[2] or ".") .. "/cases.lua")
if cases_chunk == nil then
  io.stderr:write("cannot load cases.lua: " .. tostring(cerr) .. "\n")
  os.exit(2)
end

local passed, failed = 0, 0
for _, case in ipairs(cases_chunk()) do
  obj = case.obj -- Argo CD passes the resource as the global `obj`
  local ok, hs = pcall(script)
  local problem = nil
  if not ok then
    problem = "error: " .. tostring(hs)
  elseif type(hs) ~= "table" then
    problem = "returned " .. type(hs) .. " instead of a table"
  elseif hs.status ~= case.want then
    problem = "status " .. tostring(hs.status) .. ", want " .. case.want .. " (message: " .. tostring(hs.message) .. ")"
  elseif type(hs.message) ~= "string" or hs.message == "" then
    problem = "empty message"
  elseif case.msg ~= nil and string.find(hs.message, case.msg, 1, true) == nil then
    problem = "message " .. string.format("%q", hs.message) .. " lacks " .. string.format("%q", case.msg)
  end
  if problem == nil then
    passed = passed + 1
    print("ok   " .. case.name .. " -> " .. hs.status .. ": " .. hs.message)
  else
    failed = failed + 1
    print("FAIL " .. case.name .. ": " .. problem)
  end
end
print(passed .. " passed, " .. failed .. " failed")
if failed > 0 or passed == 0 then
  os.exit(1)
end
