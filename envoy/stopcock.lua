--[[
Stopcock's REST shaping, run by Envoy's Lua filter (envoy/envoy.yaml).

The filter sits BEFORE grpc_json_transcoder in the chain. Envoy runs decoder
filters in order and encoder filters in reverse, so:
  * envoy_on_request sees the REST request before the transcoder maps it onto
    a gRPC request (the query string is still there to be checked);
  * envoy_on_response sees the response AFTER the transcoder turned the gRPC
    answer into JSON, and has the last word on status, headers and body.

Every request, REST or native gRPC, first loses the headers that cannot be
gRPC metadata (see drop_illegal_metadata): grpcio fails a call on them, and
a REST client rarely controls every header it sends.

Beyond that, native gRPC calls (content-type application/grpc*) are left
strictly alone: they are not marked on the request path, and the response
path returns at once for unmarked streams, so it never buffers or rewrites
them (grpcurl and server streaming through Envoy depend on that).

The agreement with the manager (which owns the REST semantics):
  * success with a REST status other than 200: initial metadata
    `x-http-status: 201|202` -> becomes :status;
  * errors: a trailers-only answer whose metadata holds `x-http-status` and
    `x-stopcock-error` (the exact JSON error body, ASCII) -> becomes :status
    and the body, replacing the transcoder's google.rpc.Status JSON.
It also unwraps the field named by a route's `response_body` metadata (the
proto's response_body, which Envoy's transcoder cannot apply; see the routes
in envoy.yaml), gives gRPC errors that lack x-stopcock-error the contract's
shape, and removes grpc-* headers from REST answers. Envoy's own replies (bad
query value, unknown path, upstream down...) are shaped by
local_reply_config in envoy.yaml, not here.

It also bounds REST request bodies (MAX_REQUEST_BODY_BYTES, ingress aside)
and answers a larger one 413 PayloadTooLarge only once it has read all of it:
see limit_body.

Lua globals are shared by every stream on a worker, so per-request state
lives in the stream's dynamic metadata (namespace "stopcock"), never in
variables.
]]

-- Query parameters a REST client may send, on any endpoint. A query parameter
-- can set ANY field of the gRPC request, path-bound ones included
-- (`/v0/pipelines/a?name=b` would address pipeline b), so everything not
-- listed is refused here, before the transcoder sees it. Extend this list
-- when an endpoint gains a parameter; a listed parameter that the endpoint's
-- request message lacks is still refused by the transcoder
-- (reject_unknown_query_parameters), as InvalidRequest too.
local ALLOWED_QUERY_PARAMETERS = {
  "force",
  "initial",
  "dismiss_error",
  "bootstrap_policy",
  "silent_bootstrap",
  "concurrent_bootstrap",
  "selector",
  "incarnation_uuid",
  "format",
  "update_format",
  "array",
  "sql",
  "json_flavor",
  "follow",
  "pipeline_name",
  "token",
  "connector_metadata",
  "after_refresh_version",
}

-- Parameters with a fixed set of values (the OpenAPI document lists them;
-- tools/openapi.py checks this list against its own). The manager reads an
-- empty value as "left out", so `?selector=` would quietly mean the default:
-- an empty value is refused here instead, as Feldera refuses it.
local VALUED_QUERY_PARAMETERS = {
  "selector",
  "initial",
  "bootstrap_policy",
  "format",
  "update_format",
  "json_flavor",
}

-- REST request bodies larger than this are refused (413 PayloadTooLarge).
-- Keep in step with stopcock.limits.MAX_REQUEST_BODY_BYTES (tests/test_limits.py
-- checks). Ingress bodies are left alone: that path is meant to stream.
local MAX_REQUEST_BODY_BYTES = 83886080
local INGRESS_PATH = "^/v0/pipelines/[^/?]+/ingress/"

local NAMESPACE = "stopcock" -- dynamic metadata; local_reply_config reads it too
local RETRY_AFTER_SECONDS = "5"

-- Names of gRPC codes, for errors the manager sent without x-stopcock-error
-- (a bug or an unexpected exception there). UNAVAILABLE means the manager
-- cannot serve right now, which clients retry like Envoy's own 503.
local GRPC_ERROR_CODES = {
  [1] = "Cancelled", [2] = "Unknown", [3] = "InvalidArgument",
  [4] = "DeadlineExceeded", [5] = "NotFound", [6] = "AlreadyExists",
  [7] = "PermissionDenied", [8] = "ResourceExhausted", [9] = "FailedPrecondition",
  [10] = "Aborted", [11] = "OutOfRange", [12] = "Unimplemented",
  [13] = "Internal", [14] = "ManagerUnavailable", [15] = "DataLoss",
  [16] = "Unauthenticated",
}

local ALLOWED = {}
for _, name in ipairs(ALLOWED_QUERY_PARAMETERS) do
  ALLOWED[name] = true
end
local VALUED = {}
for _, name in ipairs(VALUED_QUERY_PARAMETERS) do
  VALUED[name] = true
end

local function percent_decode(text)
  return (text:gsub("%%(%x%x)", function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- A JSON string literal for arbitrary bytes. Bytes >= 0x80 are escaped one by
-- one (as Latin-1): the result is always valid, ASCII-only JSON, whatever a
-- client put in a query string.
local function json_string(text)
  return '"' .. text:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function error_json(message, error_code, details_json)
  return '{"message": ' .. json_string(message) .. ', "error_code": '
    .. json_string(error_code) .. ', "details": ' .. details_json .. "}"
end

-- Index of the quote closing the JSON string that opens at `i`, or nil.
local function string_end(json, i)
  local pos = i + 1
  while true do
    local k = json:find('[\\"]', pos)
    if k == nil then return nil end
    if json:byte(k) == 34 then return k end -- '"'
    pos = k + 2 -- skip the escaped character
  end
end

-- The JSON text of the object or array that the transcoder printed as the
-- first member of the response, `{"<field>":<value>...}`, or nil. Only the
-- value's extent is found (brackets counted outside strings); nothing is
-- re-encoded, so the bytes are exactly what the transcoder printed.
local function unwrap(json, field)
  local prefix = '{"' .. field .. '":'
  if json:sub(1, #prefix) ~= prefix then return nil end
  local start = #prefix + 1
  local first = json:sub(start, start)
  if first ~= "{" and first ~= "[" then return nil end
  local depth, pos = 0, start
  while true do
    local i = json:find('[{}%[%]"]', pos)
    if i == nil then return nil end
    local c = json:byte(i)
    if c == 34 then
      local e = string_end(json, i)
      if e == nil then return nil end
      pos = e + 1
    else
      if c == 123 or c == 91 then depth = depth + 1 else depth = depth - 1 end -- { [
      pos = i + 1
      if depth == 0 then return json:sub(start, i) end
    end
  end
end

-- REST-only request checks: every reply made here is final and already in
-- the contract's shape, which the local_reply_config mapper keyed on
-- `stopcock.lua_reply` passes through unchanged.
local function reject(handle, message, details_json)
  handle:streamInfo():dynamicMetadata():set(NAMESPACE, "lua_reply", "1")
  handle:respond(
    { [":status"] = "400", ["content-type"] = "application/json" },
    error_json(message, "InvalidRequest", details_json)
  )
end

local BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Base64 exactly as grpcio's HPACK parser decodes a -bin value: standard
-- alphabet, at most two '=' at the end, no 1-character tail, and the unused
-- low bits of the last character zero ("YQ==" is fine, "YR==" is refused).
local function valid_base64(value)
  local digits = value:match("^([A-Za-z0-9+/]*)=?=?$")
  if digits == nil then return false end
  local tail = #digits % 4
  if tail == 0 then return true end
  if tail == 1 then return false end
  local last = BASE64_DIGITS:find(digits:sub(-1), 1, true) - 1
  return last % (tail == 2 and 16 or 4) == 0
end

-- Whether a header can travel as gRPC metadata (PROTOCOL-HTTP2.md): a key of
-- [0-9a-z_.-], and a value that is base64 for a -bin key, printable ASCII
-- (0x20-0x7E) otherwise. HTTP/1.1 allows more in both (e.g. `W!1rc: x`, a
-- tab or UTF-8 in a value); grpcio fails the whole call on a bad key or a bad
-- -bin value (which Envoy then answered 500), and a bad -bin value can even
-- break later -bin headers of other calls on the same upstream connection.
local function valid_metadata(name, value)
  if name:find("[^0-9a-z_.%-]") then return false end
  if name:sub(-4) == "-bin" then return valid_base64(value) end
  return not value:find("[^\32-\126]")
end

-- grpc-timeout as gRPC defines it: up to 8 digits and a unit. grpcio fails
-- the call on anything else ("Error parsing 'grpc-timeout' metadata").
local function valid_timeout(value)
  return value:match("^%d%d?%d?%d?%d?%d?%d?%d?[HMSmun]$") ~= nil
end

-- Drops, rather than refuses, what cannot be forwarded: browsers, proxies
-- and HTTP libraries add headers their user does not control, and none that
-- Stopcock reads (authorization, content-type, x-request-id...) is affected.
-- Pseudo-headers (:path...) are HTTP/2's own, not metadata. REST requests
-- also lose binary metadata and every grpc-* header: a REST client is no
-- gRPC client, and e.g. its grpc-timeout would set the call's deadline.
local function drop_illegal_metadata(headers, rest)
  local illegal = {}
  for name, value in pairs(headers) do
    if name:sub(1, 1) ~= ":" then
      local drop = not valid_metadata(name, value)
      if rest then
        drop = drop or name:sub(-4) == "-bin" or name:sub(1, 5) == "grpc-"
      elseif name == "grpc-timeout" then
        drop = drop or not valid_timeout(value)
      end
      if drop then illegal[#illegal + 1] = name end
    end
  end
  for _, name in ipairs(illegal) do
    headers:remove(name)
  end
end

-- Refuses a body over MAX_REQUEST_BODY_BYTES, but only after reading all of
-- it: an early answer would leave Envoy closing a connection the client is
-- still writing to, and many clients (Python's requests among them) report
-- that reset instead of the answer. Reading is cheap (chunks are dropped as
-- they come, nothing is kept); the answer itself is made on the response
-- path (payload_too_large), from the mark left in the stream's metadata.
--   * Content-Length over the limit: the request becomes GET /healthz (an
--     open call that changes nothing) so the manager sees none of it, and
--     every chunk is dropped. Mark "announced": the answer is always 413.
--   * No Content-Length (chunked, or HTTP/2 without it): chunks are counted
--     and forwarded until the limit, dropped after it. The transcoder then
--     sees a truncated document, which it refuses once the body has ended.
--     Mark "counted": an error answer becomes 413 (a body whose JSON ended
--     within the limit, padded past it, is served as usual).
local function limit_body(handle, headers, path)
  if path:match(INGRESS_PATH) then return end
  local length = headers:get("content-length")
  if length ~= nil then
    if (tonumber(length) or 0) <= MAX_REQUEST_BODY_BYTES then return end
    handle:streamInfo():dynamicMetadata():set(NAMESPACE, "too_large", "announced")
    headers:replace(":method", "GET")
    headers:replace(":path", "/healthz")
    handle:clearRouteCache()
    for chunk in handle:bodyChunks() do
      chunk:setBytes("")
    end
    return
  end
  local seen = 0
  for chunk in handle:bodyChunks() do
    seen = seen + chunk:length()
    if seen > MAX_REQUEST_BODY_BYTES then
      -- (Objects from before a yield are stale: ask for the metadata anew.)
      handle:streamInfo():dynamicMetadata():set(NAMESPACE, "too_large", "counted")
      chunk:setBytes("")
    end
  end
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  local rest = content_type:sub(1, 16) ~= "application/grpc"
  drop_illegal_metadata(headers, rest)
  if not rest then
    return -- native gRPC: otherwise untouched
  end
  -- Marks the stream for envoy_on_response and local_reply_config.
  handle:streamInfo():dynamicMetadata():set(NAMESPACE, "rest", "1")

  local path = headers:get(":path") or ""
  local query = path:match("%?(.*)$") or ""
  for pair in query:gmatch("[^&]+") do
    local name = percent_decode(pair:match("^[^=]*"))
    if not ALLOWED[name] then
      reject(handle, "Unknown query parameter '" .. name .. "'",
        '{"parameter": ' .. json_string(name) .. "}")
      return
    end
    if VALUED[name] and pair:match("^[^=]*=?$") then
      reject(handle, "Query parameter '" .. name .. "' has no value: leave it out for the default",
        '{"parameter": ' .. json_string(name) .. "}")
      return
    end
  end

  -- A PATCH needs a JSON body ({} is a no-op): with none, the transcoder would
  -- still hand the manager an empty patch, so refuse it here as Feldera's JSON
  -- extractor does.
  -- (HTTP/1 without Content-Length or Transfer-Encoding has no body; HTTP/2
  -- may omit Content-Length, so only its explicit 0 counts.)
  local length = headers:get("content-length")
  local http1 = handle:streamInfo():protocol():sub(1, 6) == "HTTP/1"
  if headers:get(":method") == "PATCH" and path:match("^[^?]*"):match("^/v0/pipelines/[^/]+$")
      and (length == "0" or (length == nil and http1
      and headers:get("transfer-encoding") == nil)) then
    reject(handle, "Json deserialize error: EOF while parsing a value", "null")
    return
  end

  limit_body(handle, headers, path)
end

-- The replacement body for a gRPC error that came without x-stopcock-error,
-- or nil when the response is not a gRPC error. When the transcoder could
-- print the google.rpc.Status (convert_grpc_status) the body is its JSON,
-- `{"code":N,"message":"..."...}`, and the message is copied as the escaped
-- literal it already is; when it could not (e.g. a detail type missing from
-- its descriptor set) grpc-status and grpc-message are still headers.
-- Envoy's own replies, shaped by local_reply_config, match neither. Also
-- returns the HTTP status to answer with, when it is not the transcoder's.
local function fallback_error(json, grpc_status, grpc_message)
  local code, message_json = tonumber(grpc_status), nil
  if code ~= nil then
    message_json = json_string(percent_decode(grpc_message or ""))
  else
    local code_text, quote = json:match('^{"code":(%d+),"message":()"')
    if code_text == nil then return nil end
    code = tonumber(code_text)
    local e = string_end(json, quote)
    if e == nil then return nil end
    message_json = json:sub(quote, e)
  end
  if code == 0 then return nil end
  -- RESOURCE_EXHAUSTED from gRPC itself: a message over the manager's limit
  -- (a body under MAX_REQUEST_BODY_BYTES that grew when decoded), in its
  -- words "Received message larger than max (<size> vs. <limit>)".
  local size, limit = message_json:match("larger than max %((%d+) vs%. (%d+)%)")
  if code == 8 and limit ~= nil then
    return error_json("The request is " .. size .. " bytes once decoded, more than the "
      .. limit .. " bytes the manager accepts", "PayloadTooLarge",
      '{"limit_bytes": ' .. limit .. "}"), "413"
  end
  return '{"message": ' .. message_json .. ', "error_code": '
    .. json_string(GRPC_ERROR_CODES[code] or "Unknown")
    .. ', "details": {"grpc_status": ' .. code .. "}}"
end

local function valid_status(text)
  if text ~= nil and text:match("^[1-5]%d%d$") then return text end
  return nil
end

-- The REST face speaks HTTP: the agreement headers and gRPC's own
-- (grpc-status, grpc-message, grpc-status-details-bin, grpc-accept-encoding)
-- are internals.
local function remove_internal_headers(headers)
  local internal = { "x-http-status", "x-stopcock-error" }
  for name, _ in pairs(headers) do
    if name:sub(1, 5) == "grpc-" then internal[#internal + 1] = name end
  end
  for _, name in ipairs(internal) do
    headers:remove(name)
  end
end

-- The answer to a body limit_body dropped, whatever was answered upstream.
local function payload_too_large(handle)
  local body = handle:body(true) -- the whole answer, so it can be replaced
  local headers = handle:headers()
  remove_internal_headers(headers)
  headers:replace(":status", "413")
  headers:replace("content-type", "application/json")
  body:setBytes(error_json("The request body is larger than the limit of "
    .. MAX_REQUEST_BODY_BYTES .. " bytes", "PayloadTooLarge",
    '{"limit_bytes": ' .. MAX_REQUEST_BODY_BYTES .. "}"))
end

function envoy_on_response(handle)
  local stream = handle:streamInfo():dynamicMetadata():get(NAMESPACE)
  if stream == nil or stream.rest == nil then
    return -- native gRPC: never buffered nor rewritten
  end
  if stream.lua_reply ~= nil then
    return -- our own reply from envoy_on_request
  end
  local headers = handle:headers()
  local status = headers:get(":status")
  if stream.too_large == "announced" or (stream.too_large == "counted" and tonumber(status) >= 400) then
    payload_too_large(handle)
    return
  end
  local http_status = valid_status(headers:get("x-http-status"))
  local content_type = headers:get("content-type") or ""

  if tonumber(status) < 400 then
    remove_internal_headers(headers)
    if http_status ~= nil then
      headers:replace(":status", http_status)
    end
    -- Set by envoy.yaml on the routes of methods with a `response_body`.
    local field = handle:metadata():get("response_body")
    if field == nil or content_type:sub(1, 16) ~= "application/json" then
      return -- streaming answers flow through untouched
    end
    local body = handle:body()
    if body == nil then return end
    local json = body:getBytes(0, body:length())
    local inner
    if handle:metadata():get("sole_field") then
      -- The response message has no other field (tests/test_envoy_config.py
      -- checks the routes that say so): the value is everything between the
      -- prefix and the closing brace, found without scanning the JSON token
      -- by token (a long list of API keys).
      local prefix = '{"' .. field .. '":'
      if json:sub(1, #prefix) == prefix and json:sub(-1) == "}" then
        inner = json:sub(#prefix + 1, -2)
      end
    else
      inner = unwrap(json, field)
    end
    if inner == nil then
      handle:logWarn("stopcock: no '" .. field .. "' field to unwrap in the response")
      return
    end
    body:setBytes(inner)
    return
  end

  -- An error. Read everything from the headers first: body() waits for the
  -- whole answer and invalidates this headers object.
  local error_body = headers:get("x-stopcock-error")
  local grpc_status = headers:get("grpc-status")
  local grpc_message = headers:get("grpc-message")
  -- body(true) gives a buffer even for a headers-only (trailers-only) answer,
  -- and setBytes on it then adds the body.
  local body = handle:body(true)
  local fallback_status = nil
  if error_body == nil then
    error_body, fallback_status = fallback_error(body:getBytes(0, body:length()), grpc_status,
      grpc_message)
    if error_body == nil then
      return -- one of Envoy's own replies, already shaped
    end
  end
  headers = handle:headers()
  remove_internal_headers(headers)
  status = http_status or fallback_status or status
  headers:replace(":status", status)
  headers:replace("content-type", "application/json")
  if status == "503" then headers:replace("retry-after", RETRY_AFTER_SECONDS) end
  body:setBytes(error_body)
end
