-- Argo CD health of a ModelRollout (modelrollout.io/v1alpha1), from the status the operator writes.
-- Install it in argocd-cm as resource.customizations.health.modelrollout.io_ModelRollout (README,
-- "GitOps"). Lua 5.1, as Argo CD runs it.
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to read the ModelRollout"
  return hs
end
-- A spec (or a status) the operator cannot use: it keeps the rollout's state and waits for a fix.
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    if (condition.type == "SpecValid" or condition.type == "StatusValid") and condition.status == "False" then
      hs.status = "Degraded"
      hs.message = condition.message
      return hs
    end
  end
end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. generation
  return hs
end
local phase = status.phase or "Idle"
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Idle" then
  if status.stableVersion == nil then
    hs.status = "Degraded"
    hs.message = "No version holds the stable alias: nothing to serve"
    return hs
  end
  hs.status = "Healthy"
elseif phase == "RolledBack" or phase == "Aborted" then
  -- The stable version serves; the candidate did not make it.
  hs.status = "Degraded"
elseif phase == "Paused" then
  hs.status = "Suspended"
else
  hs.status = "Progressing"
end
if status.message ~= nil and status.message ~= "" then
  hs.message = phase .. ": " .. status.message
else
  hs.message = phase
end
return hs
