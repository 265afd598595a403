-- Unique newCall pushes, as sipgate sends them.
counter = 0
local thread_id = 0
setup = function(thread) thread:set("tid", thread_id); thread_id = thread_id + 1 end
request = function()
  counter = counter + 1
  local body = string.format("event=newCall&direction=in&from=49176%07d&to=4928559389086&callId=wrk%d-%d-%d&origCallId=x&user%%5B%%5D=Support+Team&xcid=8419b3450b75cd19", counter % 9999999, os.time(), tid or 0, counter)
  return wrk.format("POST", "/api/v1/sipgate/in", {["Content-Type"]="application/x-www-form-urlencoded"}, body)
end
