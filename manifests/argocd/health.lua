-- Argo CD health of an RLKDJob (argocd-cm key resource.customizations.health.rlkd.ai_RLKDJob),
-- from status.phase and status.conditions. The phases are rlkd.spec.status.PHASES: the terminal
-- ones map below; every other phase (Pending, Provisioning, Preparing, Training, Evaluating, and
-- any phase a newer operator adds) is Progressing. A test runs this file on sample statuses.
local TERMINAL = {
  Succeeded = "Healthy",
  Failed = "Degraded",
  Suspended = "Suspended",
}

local hs = { status = "Progressing", message = "Waiting for the operator to report a phase" }
if obj.status == nil or obj.status.phase == nil then
  return hs
end

local phase = obj.status.phase
hs.status = TERMINAL[phase] or "Progressing"
hs.message = phase
-- The first condition that does not hold says why (a store it cannot reach, a failed pod...).
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.status == "False" and condition.message ~= nil and condition.message ~= "" then
      hs.message = phase .. ": " .. condition.type .. ": " .. condition.message
      break
    end
  end
end
return hs
