-- Wireshark/tshark dissector for the appliance's storage protocol: the 40-byte storage header
-- at the start of the UDP payload of every object request and reply, and the operation data
-- after it. The protocol's one definition is netwire/src/storage.rs; its reference text is
-- docs/storage-service.md (and docs/srv6.md, "Storage header").
--
--   0                   1                   2                   3
--   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
--  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
--  |        Magic 0x4153 "AS"      |  Version = 1  |      Op       |
--  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
--  |        Status (replies)       |             Flags             |
--  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
--  |          Request Id (64)  |  Object Id (64)  |  Offset (64)   |
--  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
--  |          Length (32)          |          Reserved (32)        |
--  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
--  |                  Operation data (see below)                 ...
--
-- All fields big-endian. A reply carries the request's op with bit 0x80 set, the same request
-- id, object id and offset, and a status.
--
-- Use:
--   tshark -X lua_script:tools/wireshark/aplstorage.lua -r capture.pcapng -Y aplstorage
--   wireshark -X lua_script:tools/wireshark/aplstorage.lua capture.pcapng
-- or copy the file into ~/.local/lib/wireshark/plugins/. It claims UDP port 7878 (the
-- `storage.udp_port` default; preference "aplstorage.udp_port") and, on any other UDP port,
-- payloads that start with the magic and version 1 (heuristic, for services on another port).
--
-- Display filters: aplstorage.op, aplstorage.op.code, aplstorage.op.reply, aplstorage.status,
-- aplstorage.request_id, aplstorage.object_id, aplstorage.offset, aplstorage.length,
-- aplstorage.chunk, aplstorage.fragment, aplstorage.object_size, aplstorage.object_version,
-- aplstorage.stat.*, aplstorage.list.*, aplstorage.probe.*; malformed packets carry expert
-- infos (aplstorage.expert.*): filter with `_ws.expert` or list them with `-z expert`.

local HEADER_LEN = 40
local MAGIC = 0x4153
local VERSION = 1
local OP_REPLY = 0x80
local FRAGMENT = 1024   -- bytes of object data in one put or get packet
local CHUNK = 4096      -- the store's block: a put is acknowledged when its chunk is durable
local LIST_MAX = 50     -- most entries in one list reply
local DEFAULT_PORT = 7878

local OP_PUT, OP_GET, OP_STAT, OP_DELETE, OP_LIST, OP_PROBE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x10

local op_names = {
    [OP_PUT] = "put", [OP_GET] = "get", [OP_STAT] = "stat",
    [OP_DELETE] = "delete", [OP_LIST] = "list", [OP_PROBE] = "probe",
}
-- Every op byte, requests and replies.
local op_byte_names = {}
for code, name in pairs(op_names) do
    op_byte_names[code] = name
    op_byte_names[code + OP_REPLY] = name .. " reply"
end

-- netwire::storage::status
local status_names = {
    [0] = "ok", [1] = "not_found", [2] = "bad_request", [3] = "unsupported", [4] = "checksum",
    [5] = "no_space", [6] = "busy", [7] = "version", [8] = "io",
}

local p = Proto("aplstorage", "Appliance storage protocol")

local f = {
    magic = ProtoField.uint16("aplstorage.magic", "Magic", base.HEX),
    version = ProtoField.uint8("aplstorage.version", "Version", base.DEC),
    op = ProtoField.uint8("aplstorage.op", "Op", base.HEX, op_byte_names),
    op_reply = ProtoField.bool("aplstorage.op.reply", "Reply", 8, nil, OP_REPLY),
    op_code = ProtoField.uint8("aplstorage.op.code", "Operation", base.HEX, op_names, 0x7f),
    status = ProtoField.uint16("aplstorage.status", "Status", base.DEC, status_names),
    flags = ProtoField.uint16("aplstorage.flags", "Flags", base.HEX),
    flag_last = ProtoField.bool("aplstorage.flags.last", "Last fragment of its chunk", 16, nil, 0x0001),
    flag_after = ProtoField.bool("aplstorage.flags.after", "Object id is a start-after id", 16, nil, 0x0001),
    request_id = ProtoField.uint64("aplstorage.request_id", "Request id", base.DEC),
    object_id = ProtoField.uint64("aplstorage.object_id", "Object id", base.HEX),
    offset = ProtoField.uint64("aplstorage.offset", "Offset", base.DEC),
    length = ProtoField.uint32("aplstorage.length", "Length", base.DEC),
    reserved = ProtoField.uint32("aplstorage.reserved", "Reserved", base.HEX),
    -- Where a put or get fragment lies (generated from the offset).
    chunk = ProtoField.uint64("aplstorage.chunk", "Chunk", base.DEC),
    fragment = ProtoField.uint8("aplstorage.fragment", "Fragment in chunk", base.DEC),
    -- put request / get reply
    object_size = ProtoField.uint64("aplstorage.object_size", "Object size", base.DEC),
    object_version = ProtoField.uint64("aplstorage.object_version", "Object version", base.DEC),
    data = ProtoField.bytes("aplstorage.data", "Data"),
    -- delete request
    delete_version = ProtoField.uint64("aplstorage.delete.version", "Version (0: any)", base.DEC),
    -- stat reply
    stat_size = ProtoField.uint64("aplstorage.stat.size", "Size", base.DEC),
    stat_version = ProtoField.uint64("aplstorage.stat.version", "Version", base.DEC),
    stat_chunks = ProtoField.uint32("aplstorage.stat.chunks", "Chunks", base.DEC),
    stat_flags = ProtoField.uint32("aplstorage.stat.flags", "Flags", base.HEX),
    stat_complete = ProtoField.bool("aplstorage.stat.complete", "Complete", 32, nil, 0x00000001),
    -- list reply
    list_count = ProtoField.uint32("aplstorage.list.count", "Count", base.DEC),
    list_entry = ProtoField.none("aplstorage.list.entry", "Entry"),
    list_id = ProtoField.uint64("aplstorage.list.id", "Object id", base.HEX),
    list_size = ProtoField.uint64("aplstorage.list.size", "Size", base.DEC),
    list_version = ProtoField.uint64("aplstorage.list.version", "Version", base.DEC),
    -- probe reply
    probe_accepted_by = ProtoField.ipv6("aplstorage.probe.accepted_by", "Accepted by"),
    probe_queue_depth = ProtoField.uint32("aplstorage.probe.queue_depth", "Queue depth", base.DEC),
    probe_reserved = ProtoField.uint32("aplstorage.probe.reserved", "Reserved", base.HEX),
}
p.fields = {}
for _, field in pairs(f) do
    table.insert(p.fields, field)
end

local e = {
    short = ProtoExpert.new("aplstorage.expert.short", "Shorter than the 40-byte storage header",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_magic = ProtoExpert.new("aplstorage.expert.bad_magic", "Bad magic (not 0x4153)",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_version = ProtoExpert.new("aplstorage.expert.bad_version", "Unsupported version (not 1)",
        expert.group.MALFORMED, expert.severity.ERROR),
    unknown_op = ProtoExpert.new("aplstorage.expert.unknown_op", "Unknown op",
        expert.group.PROTOCOL, expert.severity.WARN),
    length_mismatch = ProtoExpert.new("aplstorage.expert.length_mismatch",
        "Length does not match the operation data", expert.group.MALFORMED, expert.severity.ERROR),
    trailing = ProtoExpert.new("aplstorage.expert.trailing", "Bytes after the operation data",
        expert.group.PROTOCOL, expert.severity.WARN),
    bad_fragment = ProtoExpert.new("aplstorage.expert.bad_fragment",
        "Not a fragment: offset not a multiple of 1024 or length over 1024",
        expert.group.PROTOCOL, expert.severity.WARN),
    status_in_request = ProtoExpert.new("aplstorage.expert.status_in_request", "Status set in a request",
        expert.group.PROTOCOL, expert.severity.WARN),
    reserved = ProtoExpert.new("aplstorage.expert.reserved", "Reserved field not zero",
        expert.group.PROTOCOL, expert.severity.WARN),
    list_count = ProtoExpert.new("aplstorage.expert.list_count", "List count promises more entries than there are",
        expert.group.MALFORMED, expert.severity.ERROR),
    error_status = ProtoExpert.new("aplstorage.expert.error_status", "Request failed",
        expert.group.RESPONSE_CODE, expert.severity.NOTE),
}
p.experts = {}
for _, ex in pairs(e) do
    table.insert(p.experts, ex)
end

p.prefs.udp_port = Pref.uint("UDP port", DEFAULT_PORT, "The storage service's UDP port (storage.udp_port)")

local function u64(tvb, off)
    return tvb(off, 8):uint64()
end

-- An object id as the replica address ends: 0x2a, not 0x000000000000002a.
local function hex(v)
    local digits = v:tohex():gsub("^0+", "")
    if digits == "" then digits = "0" end
    return "0x" .. digits
end

-- How many bytes of operation data a known op's request or reply with this length field carries.
local function expected_data_len(code, reply, length)
    if not reply then
        if code == OP_PUT then return 16 + length end   -- size, version, then `length` fragment bytes
        if code == OP_GET or code == OP_LIST then return 0 end  -- length: bytes / entries wanted
        return length                                    -- stat, probe: 0; delete: 8 (a version)
    end
    return length                                        -- every reply: length = its data's bytes
end

local function dissect_data(tvb, tree, off, code, reply, status, length, avail)
    if avail <= 0 then return end
    local dt = tree:add(tvb(off, avail), string.format("Operation data (%d bytes)", avail))
    if (code == OP_PUT and not reply) or (code == OP_GET and reply and status == 0) then
        if avail >= 16 then
            dt:add(f.object_size, tvb(off, 8))
            dt:add(f.object_version, tvb(off + 8, 8))
            if avail > 16 then
                dt:add(f.data, tvb(off + 16, avail - 16))
            end
        else
            dt:add(f.data, tvb(off, avail))
        end
    elseif code == OP_DELETE and not reply and avail >= 8 then
        dt:add(f.delete_version, tvb(off, 8))
    elseif code == OP_STAT and reply and avail >= 24 then
        dt:add(f.stat_size, tvb(off, 8))
        dt:add(f.stat_version, tvb(off + 8, 8))
        dt:add(f.stat_chunks, tvb(off + 16, 4))
        local fl = dt:add(f.stat_flags, tvb(off + 20, 4))
        fl:add(f.stat_complete, tvb(off + 20, 4))
    elseif code == OP_LIST and reply and avail >= 4 then
        local n = tvb(off, 4):uint()
        local ct = dt:add(f.list_count, tvb(off, 4))
        local fits = math.floor((avail - 4) / 24)
        if n > fits then
            ct:add_proto_expert_info(e.list_count,
                string.format("List count %d, but the data holds %d entries", n, fits))
            n = fits
        end
        for i = 0, n - 1 do
            local at = off + 4 + i * 24
            local et = dt:add(f.list_entry, tvb(at, 24))
            et:set_text(string.format("Entry %d: object %s, %s bytes, version %s", i,
                hex(u64(tvb, at)), tostring(u64(tvb, at + 8)), tostring(u64(tvb, at + 16))))
            et:add(f.list_id, tvb(at, 8))
            et:add(f.list_size, tvb(at + 8, 8))
            et:add(f.list_version, tvb(at + 16, 8))
        end
    elseif code == OP_PROBE and reply and avail >= 24 then
        dt:add(f.probe_accepted_by, tvb(off, 16))
        dt:add(f.probe_queue_depth, tvb(off + 16, 4))
        dt:add(f.probe_reserved, tvb(off + 20, 4))
    else
        dt:add(f.data, tvb(off, avail))
    end
end

local function dissect(tvb, pinfo, tree)
    local len = tvb:reported_length_remaining()
    pinfo.cols.protocol = "APLSTORAGE"
    local t = tree:add(p, tvb(), "Appliance storage protocol")
    if len < HEADER_LEN then
        t:add_proto_expert_info(e.short, string.format("Storage header truncated: %d bytes, %d needed",
            len, HEADER_LEN))
        pinfo.cols.info = string.format("Malformed storage packet (%d bytes, header is %d)", len, HEADER_LEN)
        if len >= 2 then t:add(f.magic, tvb(0, 2)) end
        return len
    end
    local magic = tvb(0, 2):uint()
    local mi = t:add(f.magic, tvb(0, 2))
    if magic ~= MAGIC then
        mi:add_proto_expert_info(e.bad_magic, string.format("Bad magic 0x%04x (expected 0x%04x)", magic, MAGIC))
        pinfo.cols.info = string.format("Malformed storage packet: bad magic 0x%04x", magic)
        return len
    end
    local version = tvb(2, 1):uint()
    local vi = t:add(f.version, tvb(2, 1))
    if version ~= VERSION then
        vi:add_proto_expert_info(e.bad_version, string.format("Unsupported version %d (expected %d)",
            version, VERSION))
        pinfo.cols.info = string.format("Storage packet of unsupported version %d", version)
        return len
    end

    local op = tvb(3, 1):uint()
    local code = bit.band(op, 0x7f)
    local reply = bit.band(op, OP_REPLY) ~= 0
    local status = tvb(4, 2):uint()
    local flags = tvb(6, 2):uint()
    local length = tvb(32, 4):uint()
    local offset = u64(tvb, 24)

    local oi = t:add(f.op, tvb(3, 1))
    oi:add(f.op_reply, tvb(3, 1))
    oi:add(f.op_code, tvb(3, 1))
    local name = op_names[code]
    if name == nil then
        oi:add_proto_expert_info(e.unknown_op, string.format("Unknown op 0x%02x", op))
    end
    local si = t:add(f.status, tvb(4, 2))
    if not reply and status ~= 0 then
        si:add_proto_expert_info(e.status_in_request, string.format("Status %d in a request", status))
    elseif reply and status ~= 0 then
        si:add_proto_expert_info(e.error_status, string.format("%s failed: %s",
            name or "request", status_names[status] or tostring(status)))
    end
    local fi = t:add(f.flags, tvb(6, 2))
    if code == OP_PUT and not reply then fi:add(f.flag_last, tvb(6, 2)) end
    if code == OP_LIST and not reply then fi:add(f.flag_after, tvb(6, 2)) end
    t:add(f.request_id, tvb(8, 8))
    t:add(f.object_id, tvb(16, 8))
    t:add(f.offset, tvb(24, 8))
    local li = t:add(f.length, tvb(32, 4))
    local ri = t:add(f.reserved, tvb(36, 4))
    if tvb(36, 4):uint() ~= 0 then
        ri:add_proto_expert_info(e.reserved)
    end

    if code == OP_PUT or code == OP_GET then
        local frag_ok = (offset % FRAGMENT):tonumber() == 0 and (reply or length <= FRAGMENT)
        local ci = t:add(f.chunk, tvb(24, 8), offset / CHUNK)
        ci:set_generated()
        local fr = t:add(f.fragment, tvb(24, 8), ((offset % CHUNK) / FRAGMENT):tonumber())
        fr:set_generated()
        if not frag_ok and not reply then
            li:add_proto_expert_info(e.bad_fragment, string.format(
                "Not a fragment: offset %s (a multiple of %d expected), length %d (at most %d)",
                tostring(offset), FRAGMENT, length, FRAGMENT))
        end
    end

    local avail = len - HEADER_LEN
    if name ~= nil then
        local want = expected_data_len(code, reply, length)
        if avail < want then
            li:add_proto_expert_info(e.length_mismatch, string.format(
                "Length %d means %d bytes of operation data, the packet has %d", length, want, avail))
        elseif avail > want then
            li:add_proto_expert_info(e.trailing, string.format(
                "%d bytes after the %d bytes of operation data", avail - want, want))
        end
    end
    dissect_data(tvb, t, HEADER_LEN, code, reply, status, length, avail)

    local what = name or string.format("op 0x%02x", code)
    local info
    if reply then
        info = string.format("%s reply %s id=%s object=%s", what, status_names[status] or tostring(status),
            tostring(u64(tvb, 8)), hex(u64(tvb, 16)))
    else
        info = string.format("%s request id=%s object=%s", what, tostring(u64(tvb, 8)), hex(u64(tvb, 16)))
    end
    if code == OP_PUT or code == OP_GET then
        info = info .. string.format(" offset=%s length=%d", tostring(offset), length)
    end
    t:append_text(string.format(", %s", info))
    pinfo.cols.info = info
    return len
end

function p.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree)
end

-- On other UDP ports: only payloads that start like a storage header (magic, version 1, a known
-- op), so that unrelated traffic is left alone.
local function heuristic(tvb, pinfo, tree)
    if tvb:len() < HEADER_LEN then return false end
    if tvb(0, 2):uint() ~= MAGIC or tvb(2, 1):uint() ~= VERSION then return false end
    if op_names[bit.band(tvb(3, 1):uint(), 0x7f)] == nil then return false end
    dissect(tvb, pinfo, tree)
    return true
end

local registered_port = p.prefs.udp_port
DissectorTable.get("udp.port"):add(registered_port, p)
p:register_heuristic("udp", heuristic)

function p.prefs_changed()
    if p.prefs.udp_port ~= registered_port then
        DissectorTable.get("udp.port"):remove(registered_port, p)
        registered_port = p.prefs.udp_port
        DissectorTable.get("udp.port"):add(registered_port, p)
    end
end
