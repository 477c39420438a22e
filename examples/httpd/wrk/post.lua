-- post.lua - wrk script: POST the file named by $BODY_FILE (default: a small JSON text).
--   BODY_FILE=textstats.json wrk -t2 -c8 -d10s -s post.lua http://127.0.0.1:8080/call/textstats
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local path = os.getenv("BODY_FILE")
if path then
   local f = assert(io.open(path, "rb"))
   wrk.body = f:read("*a")
   f:close()
else
   wrk.body = '{"text": "Hello pypool. Hello world!"}'
end
