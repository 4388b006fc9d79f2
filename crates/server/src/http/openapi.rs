//! The REST API's operations as one table, from which both the router and the OpenAPI 3
//! document at `/v1/openapi.json` are built — so the document cannot drift from the routes.

use ringkv_coordinator::users::Verbs;
use serde_json::{json, Map, Value};

/// Where a parameter travels.
#[derive(Clone, Copy)]
pub enum In {
    /// A `{name}` segment of the path.
    Path,
    /// A query-string parameter.
    Query,
    /// A request header.
    Header,
}

/// One parameter of an operation.
pub struct Parameter {
    /// Its name.
    pub name: &'static str,
    /// Where it travels.
    pub location: In,
    /// Whether every request must carry it.
    pub required: bool,
    /// What it means.
    pub description: &'static str,
    /// Its JSON schema, as JSON text.
    pub schema: &'static str,
}

/// Whether an operation's body may be raw bytes (`application/octet-stream`) besides JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raw {
    /// JSON only.
    No,
    /// JSON or raw bytes (a value).
    Yes,
    /// Raw bytes only (the schema is ignored).
    Only,
}

/// Who may call an operation (see [`super::access`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, logged in or not (health checks, this document).
    Public,
    /// Any client that is logged in (or let in without logging in).
    LoggedIn,
    /// Clients holding these verbs on the keyspace the path names (`default` under
    /// `/v1/keys`).
    Keyspace(Verbs),
    /// Clients holding `admin` on every keyspace (a grant `admin@*`): cluster operations
    /// and users.
    Cluster,
}

/// One REST operation.
pub struct Operation {
    /// Lowercase HTTP method.
    pub method: &'static str,
    /// Route, with `{name}` path parameters (axum and OpenAPI share the syntax).
    pub path: &'static str,
    /// OpenAPI operationId; also selects the handler in `super::handler`.
    pub id: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line on what it does.
    pub summary: &'static str,
    /// Its parameters.
    pub parameters: &'static [Parameter],
    /// Description of the request body, if the operation takes one.
    pub body: Option<&'static str>,
    /// The JSON schema of a JSON body, as JSON text; whether raw bytes are taken too.
    pub body_schema: Option<(&'static str, Raw)>,
    /// The statuses it answers with, and what each means.
    pub responses: &'static [(u16, &'static str)],
}

const KEY: Parameter = Parameter {
    name: "key",
    location: In::Path,
    required: true,
    description: "The key",
    schema: r#"{"type": "string", "minLength": 1, "maxLength": 16384}"#,
};
const KEYSPACE: Parameter = Parameter {
    name: "keyspace",
    location: In::Path,
    required: true,
    description: "The keyspace",
    schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}"#,
};
const CONTEXT: Parameter = Parameter {
    name: "X-Ringkv-Context",
    location: In::Header,
    required: false,
    description: "Causal context from a read: the write supersedes exactly what was read",
    schema: r#"{"type": "string", "pattern": "^([0-9a-f]{2})*$", "maxLength": 8192}"#,
};
const IF_MATCH: Parameter = Parameter {
    name: "If-Match",
    location: In::Header,
    required: false,
    description: "\"<etag>\" to compare-and-set, * to require the key to exist",
    schema: r#"{"type": "string", "pattern": "^([*]|\"?[0-9a-f]{16}\"?)$"}"#,
};
const CONSISTENCY: Parameter = Parameter {
    name: "consistency",
    location: In::Query,
    required: false,
    description: "one | quorum | all (local_quorum and each_quorum mean quorum); default quorum",
    schema: r#"{"type": "string", "enum": ["one", "quorum", "all", "local_quorum", "each_quorum"]}"#,
};
const R: Parameter = Parameter {
    name: "r",
    location: In::Query,
    required: false,
    description: "Replicas that must answer, 1..N",
    schema: COUNT_SCHEMA,
};
const W: Parameter = Parameter {
    name: "w",
    location: In::Query,
    required: false,
    description: "Replicas that must acknowledge, 1..N",
    schema: COUNT_SCHEMA,
};
const PW: Parameter = Parameter {
    name: "pw",
    location: In::Query,
    required: false,
    description: "Of the w acknowledgements, how many must come from the key's own replicas rather than fallback nodes holding hints, 1..N (Riak's pw); default none",
    schema: COUNT_SCHEMA,
};
const LOCAL: Parameter = Parameter {
    name: "local",
    location: In::Query,
    required: false,
    description: "true: read only the receiving node's own replica",
    schema: r#"{"type": "boolean"}"#,
};
const IF_NONE_MATCH: Parameter = Parameter {
    name: "If-None-Match",
    location: In::Header,
    required: false,
    description: "* to create only",
    schema: r#"{"type": "string", "enum": ["*"]}"#,
};
const USER: Parameter = Parameter {
    name: "user",
    location: In::Path,
    required: true,
    description: "The user's name",
    schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}"#,
};
const PREFIX: Parameter = Parameter {
    name: "prefix",
    location: In::Query,
    required: false,
    description: "Key prefix",
    schema: r#"{"type": "string", "maxLength": 16384}"#,
};
const LIMIT: Parameter = Parameter {
    name: "limit",
    location: In::Query,
    required: false,
    description: "1 to 10000, default 100",
    schema: r#"{"type": "integer", "minimum": 1, "maximum": 10000}"#,
};
const CURSOR: Parameter = Parameter {
    name: "cursor",
    location: In::Query,
    required: false,
    description: "From the previous page",
    schema: r#"{"type": "string", "pattern": "^([A-Za-z0-9_-]{4}){0,256}([A-Za-z0-9_-]{2,3})?$"}"#,
};
const TTL: Parameter = Parameter {
    name: "ttl",
    location: In::Query,
    required: false,
    description: "Seconds to live (raw bodies)",
    schema: r#"{"type": "integer", "minimum": 1, "maximum": 3153600000}"#,
};
/// A value to store.
const VALUE_BODY: &str = r#"{"type": "object", "required": ["value"], "additionalProperties": false,
  "properties": {"value": {"type": "string"},
                 "ttl": {"type": "integer", "minimum": 1, "maximum": 3153600000, "nullable": true},
                 "encoding": {"type": "string", "enum": ["base64", null], "nullable": true}}}"#;
/// Operations on a typed value.
const TYPED_BODY: &str = r#"{"type": "object", "additionalProperties": false, "minProperties": 1,
  "properties": {"incr": {"type": "integer", "minimum": -9223372036854775807, "maximum": 9223372036854775807},
                 "add": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 4096}},
                 "remove": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 4096}},
                 "set": {"type": "object", "maxProperties": 1000, "additionalProperties": {"type": "string", "maxLength": 4096}},
                 "delete": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 4096}},
                 "zadd": {"type": "object", "maxProperties": 1000, "additionalProperties": {"type": "number"}},
                 "zrem": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 4096}},
                 "push": {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 4096}}}}"#;
/// A keyspace's settings.
const KEYSPACE_BODY: &str = r#"{"type": "object", "additionalProperties": false,
  "properties": {"replication": {"type": "integer", "minimum": 1, "maximum": 16},
                 "conflict": {"type": "string", "enum": ["lww", "siblings"]},
                 "mode": {"type": "string", "enum": ["leaderless", "strong", null], "nullable": true},
                 "shards": {"type": "integer", "minimum": 1, "maximum": 64, "nullable": true}}}"#;
/// The faults on a node's links (chaos mode).
const LINKS_BODY: &str = r#"{"type": "object", "required": ["blocked", "delay_ms"], "additionalProperties": false,
  "properties": {"blocked": {"type": "array", "maxItems": 1024, "items": {"type": "string", "maxLength": 256}},
                 "delay_ms": {"type": "integer", "minimum": 0, "maximum": 10000}}}"#;
/// A user's changes.
const USER_BODY: &str = r#"{"type": "object", "additionalProperties": false,
  "properties": {"password": {"type": "string", "minLength": 8, "maxLength": 1024, "nullable": true},
                 "new_token": {"type": "boolean"},
                 "revoke_tokens": {"type": "boolean"},
                 "grants": {"type": "array", "maxItems": 64, "nullable": true, "items": {"type": "string",
                   "pattern": "^(read|write|admin|all)(,(read|write|admin|all))*@([A-Za-z0-9_-]{1,64}[*]?|[*])$"}}}}"#;
/// Replica counts: a number up to the keyspace's replication, or a level.
/// (A number above 1 may pass a keyspace's replication, which the document cannot know.)
const COUNT_SCHEMA: &str = r#"{"type": "string", "enum": ["1", "one", "quorum", "all"]}"#;
const ERRORS: &str = "Error: {\"error\": {\"code\", \"message\"}}";

/// Every operation the REST API serves.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "put",
        path: "/v1/keys/{key}",
        id: "putKey",
        access: Access::Keyspace(Verbs::WRITE),
        summary: "Store a value",
        parameters: &[
            KEY,
            TTL,
            CONSISTENCY,
            W,
            PW,
            CONTEXT,
            IF_MATCH,
            IF_NONE_MATCH,
        ],
        body: Some("JSON {\"value\": string, \"ttl\"?: seconds, \"encoding\"?: \"base64\"}, or raw bytes as application/octet-stream"),
        body_schema: Some((VALUE_BODY, Raw::Yes)),
        responses: &[(200, "Stored; ETag and X-Ringkv-Context headers"), (400, ERRORS), (412, "Precondition failed"), (413, "Value too large"), (414, "Key too long"), (415, "Unsupported content type"), (503, "Overloaded")],
    },
    Operation {
        method: "get",
        path: "/v1/keys/{key}",
        id: "getKey",
        access: Access::Keyspace(Verbs::READ),
        summary: "Read a value",
        parameters: &[KEY, CONSISTENCY, R, LOCAL],
        body: None,
        body_schema: None,
        responses: &[(200, "JSON {key, value, ttl, version}, or raw bytes with Accept: application/octet-stream; a typed value as {key, type, value, ttl, version} with value a number, an array, an object, or [{member, score}]"), (300, "Concurrent siblings: {key, siblings, context}"), (404, "Absent, deleted or expired"), (500, "Stored data corrupted")],
    },
    Operation {
        method: "post",
        path: "/v1/keys/{key}",
        id: "postKey",
        access: Access::Keyspace(Verbs::WRITE),
        summary: "Apply operations to a typed value: a counter, set, hash, sorted set or list",
        parameters: &[KEY, CONSISTENCY, W, PW],
        body: Some("JSON, the operations of one type: {\"incr\": n}; {\"add\": [...], \"remove\": [...]}; {\"set\": {field: value}, \"delete\": [...]}; {\"zadd\": {member: score}, \"zrem\": [...]}; {\"push\": [...]}"),
        body_schema: Some((TYPED_BODY, Raw::No)),
        responses: &[(200, "{key, type, value, version}: the value after the operations"), (400, ERRORS), (409, "The key holds another type, or a counter's value is not an integer"), (413, "Value too large"), (503, "Overloaded")],
    },
    Operation {
        method: "delete",
        path: "/v1/keys/{key}",
        id: "deleteKey",
        access: Access::Keyspace(Verbs::WRITE),
        summary: "Delete a key (idempotent)",
        parameters: &[KEY, CONSISTENCY, W, PW, CONTEXT, IF_MATCH],
        body: None,
        body_schema: None,
        responses: &[(200, "{key, deleted}: deleted is null when every replica of the key was down and fallbacks took the delete"), (412, "Precondition failed")],
    },
    Operation {
        method: "get",
        path: "/v1/keys",
        id: "listKeys",
        access: Access::Keyspace(Verbs::READ),
        summary: "List keys with a prefix, in order, a page at a time",
        parameters: &[
            PREFIX,
            LIMIT,
            CURSOR,
        ],
        body: None,
        body_schema: None,
        responses: &[(200, "{keys, cursor}; cursor null at the end"), (400, ERRORS)],
    },
    Operation {
        method: "put",
        path: "/v1/ks/{keyspace}",
        id: "putKeyspace",
        access: Access::Keyspace(Verbs::ADMIN),
        summary: "Create a keyspace, or change its replication",
        parameters: &[KEYSPACE],
        body: Some("JSON {\"replication\"?: 1..16 (default 3), \"conflict\"?: \"lww\" | \"siblings\", \"mode\"?: \"leaderless\" | \"strong\", \"shards\"?: 1..64 (strong only, default 8)}"),
        body_schema: Some((KEYSPACE_BODY, Raw::No)),
        responses: &[(200, "The definition"), (400, ERRORS), (409, "The conflict mode, mode or shards of an existing keyspace cannot change")],
    },
    Operation {
        method: "get",
        path: "/v1/ks/{keyspace}",
        id: "getKeyspace",
        access: Access::Keyspace(Verbs::READ),
        summary: "A keyspace's definition",
        parameters: &[KEYSPACE],
        body: None,
        body_schema: None,
        responses: &[(200, "{name, replication, conflict, version, mode, shards, placement}"), (404, "No such keyspace")],
    },
    Operation {
        method: "get",
        path: "/v1/ks",
        id: "listKeyspaces",
        access: Access::LoggedIn,
        summary: "Every keyspace",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{keyspaces: [...]}")],
    },
    Operation {
        method: "put",
        path: "/v1/ks/{keyspace}/keys/{key}",
        id: "putKeyspaceKey",
        access: Access::Keyspace(Verbs::WRITE),
        summary: "Store a value in a keyspace (as PUT /v1/keys/{key})",
        parameters: &[KEYSPACE, KEY, TTL, CONSISTENCY, W, PW, CONTEXT, IF_MATCH, IF_NONE_MATCH],
        body: Some("As PUT /v1/keys/{key}"),
        body_schema: Some((VALUE_BODY, Raw::Yes)),
        responses: &[(200, "Stored"), (404, "No such keyspace"), (412, "Precondition failed: {error, current: {value, version} or null}"), (503, "A strong keyspace's shard has no leader now: nothing applied"), (504, "A strong keyspace's write whose outcome is unknown: read before retrying")],
    },
    Operation {
        method: "post",
        path: "/v1/ks/{keyspace}/keys/{key}",
        id: "postKeyspaceKey",
        access: Access::Keyspace(Verbs::WRITE),
        summary: "Apply operations to a typed value in a keyspace (as POST /v1/keys/{key})",
        parameters: &[KEYSPACE, KEY, CONSISTENCY, W, PW],
        body: Some("As POST /v1/keys/{key}"),
        body_schema: Some((TYPED_BODY, Raw::No)),
        responses: &[(200, "The value after the operations"), (400, ERRORS), (404, "No such keyspace"), (409, "The key holds another type"), (503, "No leader: nothing applied"), (504, "Outcome unknown")],
    },
    Operation {
        method: "get",
        path: "/v1/ks/{keyspace}/keys/{key}",
        id: "getKeyspaceKey",
        access: Access::Keyspace(Verbs::READ),
        summary: "Read a value from a keyspace (as GET /v1/keys/{key})",
        parameters: &[KEYSPACE, KEY, CONSISTENCY, R, LOCAL],
        body: None,
        body_schema: None,
        responses: &[(200, "The value"), (300, "Concurrent siblings"), (404, "Absent, or no such keyspace"), (503, "A strong keyspace's shard has no leader now")],
    },
    Operation {
        method: "delete",
        path: "/v1/ks/{keyspace}/keys/{key}",
        id: "deleteKeyspaceKey",
        access: Access::Keyspace(Verbs::WRITE),
        summary: "Delete a key of a keyspace",
        parameters: &[KEYSPACE, KEY, CONSISTENCY, W, PW, CONTEXT, IF_MATCH],
        body: None,
        body_schema: None,
        responses: &[(200, "{key, deleted}: deleted is null when every replica of the key was down and fallbacks took the delete"), (404, "No such keyspace"), (412, "Precondition failed"), (503, "No leader: nothing applied"), (504, "Outcome unknown")],
    },
    Operation {
        method: "get",
        path: "/v1/ks/{keyspace}/keys",
        id: "listKeyspaceKeys",
        access: Access::Keyspace(Verbs::READ),
        summary: "List keys of a keyspace (as GET /v1/keys)",
        parameters: &[KEYSPACE, PREFIX, LIMIT, CURSOR],
        body: None,
        body_schema: None,
        responses: &[(200, "{keys, cursor}"), (404, "No such keyspace")],
    },
    Operation {
        method: "get",
        path: "/v1/cluster",
        id: "cluster",
        access: Access::LoggedIn,
        summary: "Cluster members as this node sees them",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{node_id, members: [{id, address, http, zone, weight, status, liveness, ownership, keys, disk_bytes, anti_entropy_last_ms, anti_entropy_divergence, hints_pending, joining: {state, transfers: [{donor, keyspace, records, retries, state, ranges}]}, leaving: {state, records_examined, records_sent, send_retries, sends_failed, ranges}, restoring: [{removed, state, transfers}]}]}; each range is {keyspace, low, high, peer, expected, moved}")],
    },
    Operation {
        method: "post",
        path: "/v1/cluster/leave",
        id: "leave",
        access: Access::Cluster,
        summary: "Make this node leave the cluster: it hands its key ranges to their next owners, then leaves the ring",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(202, "Leaving (or already): {state, records_examined, records_sent, send_retries, sends_failed, ranges: [{keyspace, low, high, peer, expected, moved}]}"), (409, "Not in a cluster")],
    },
    Operation {
        method: "get",
        path: "/v1/cluster/leave",
        id: "leaveProgress",
        access: Access::LoggedIn,
        summary: "Where this node's leaving stands",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{state: normal | leaving | left, records_examined, records_sent, send_retries, sends_failed, ranges: [{keyspace, low, high, peer, expected, moved}]}")],
    },
    Operation {
        method: "delete",
        path: "/v1/cluster/members/{node}",
        id: "removeMember",
        access: Access::Cluster,
        summary: "Take a dead node out of the ring for good; its ranges pass to the next nodes, which anti-entropy refills",
        parameters: &[Parameter { name: "node", location: In::Path, required: true, description: "The node's id", schema: r#"{"type": "string", "minLength": 1, "maxLength": 256}"# }],
        body: None,
        body_schema: None,
        responses: &[(200, "{removed: id}"), (404, "No such member"), (409, "The node is not down")],
    },
    Operation {
        method: "post",
        path: "/v1/cluster/repair",
        id: "startRepair",
        access: Access::Cluster,
        summary: "Start an anti-entropy round on this node now: a tree exchange with every live peer",
        parameters: &[Parameter { name: "keyspace", location: In::Query, required: false, description: "Only this keyspace", schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}"# }],
        body: None,
        body_schema: None,
        responses: &[(202, "Started (or joined the round under way): the round's progress, as GET gives it"), (404, "No such keyspace")],
    },
    Operation {
        method: "get",
        path: "/v1/cluster/repair",
        id: "repairProgress",
        access: Access::LoggedIn,
        summary: "This node's anti-entropy rounds: the one under way, or the last",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{running, exchanges_total, exchanges_done, leaves_differing, keys_repaired, last_finished_ms, last_divergence}")],
    },
    Operation {
        method: "get",
        path: "/v1/cluster/roots",
        id: "antiEntropyRoots",
        access: Access::LoggedIn,
        summary: "The roots of this node's anti-entropy trees of a keyspace, one per live peer over the keys they share, scanned now: replicas have converged when each pair's roots for each other are equal",
        parameters: &[Parameter { name: "keyspace", location: In::Query, required: false, description: "The keyspace (default: default)", schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}"# }],
        body: None,
        body_schema: None,
        responses: &[(200, "{node_id, keyspace, roots: {peer id: 16 hex digits}}"), (404, "no such keyspace")],
    },
    Operation {
        method: "get",
        path: "/v1/cluster/placement",
        id: "placement",
        access: Access::Cluster,
        summary: "Where a key lives: its ring position, its replicas in order, and what each holds of it",
        parameters: &[
            Parameter { name: "key", location: In::Query, required: true, description: "The key", schema: r#"{"type": "string", "minLength": 1, "maxLength": 16384}"# },
            Parameter { name: "keyspace", location: In::Query, required: false, description: "Its keyspace (default: default)", schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}"# },
        ],
        body: None,
        body_schema: None,
        responses: &[(200, "{key, keyspace, hash, position (0 to 1), replicas: [{id, zone, down, copy: value | tombstone | none | unreachable}]}"), (400, ERRORS), (404, "No such keyspace")],
    },
    Operation {
        method: "get",
        path: "/v1/backup",
        id: "backup",
        access: Access::Cluster,
        summary: "A point-in-time backup of this node's records (of one keyspace, if asked), streamed in the backup format that ringkv restore reads",
        parameters: &[Parameter { name: "keyspace", location: In::Query, required: false, description: "Only this keyspace", schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}"# }],
        body: None,
        body_schema: None,
        responses: &[(200, "application/octet-stream: the backup (magic RKVBACK1, a header, one frame per record, a trailer); a stream cut short lacks the trailer"), (400, ERRORS), (404, "No such keyspace")],
    },
    Operation {
        method: "post",
        path: "/v1/restore",
        id: "restore",
        access: Access::Cluster,
        summary: "Merge a batch of a backup's records into the replicas of their keys, in this cluster whatever its size: each replica merges a record into its own copy, so newer writes are kept",
        parameters: &[Parameter { name: "consistency", location: In::Query, required: false, description: "How many replicas must take each record: one | quorum (default) | all", schema: r#"{"type": "string", "enum": ["one", "quorum", "all"]}"# }],
        body: Some("Record frames of the backup format, without its magic, header or trailer (ringkv restore sends them in batches)"),
        body_schema: Some(("{}", Raw::Only)),
        responses: &[(200, "{records: how many were merged}"), (400, ERRORS), (404, "A record's keyspace does not exist"), (503, "Too few replicas took a record: send the batch again")],
    },
    Operation {
        method: "get",
        path: "/",
        id: "dashboard",
        access: Access::Public,
        summary: "The web dashboard: the ring, the members, their rates, where a key lives (HTML; its data needs a login)",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "The dashboard page, text/html")],
    },
    Operation {
        method: "get",
        path: "/v1/dashboard/events",
        id: "dashboardEvents",
        access: Access::LoggedIn,
        summary: "Server-sent events for the dashboard: an event `snapshot` each second",
        parameters: &[Parameter { name: "events", location: In::Query, required: false, description: "Snapshots to send before the stream ends (1 to 3600, the default)", schema: r#"{"type": "integer", "minimum": 1, "maximum": 3600}"# }],
        body: None,
        body_schema: None,
        responses: &[(200, "text/event-stream: each event `snapshot` is {node_id, time_ms, members: as GET /v1/cluster gives them, each with counters {writes, merges, read_repairs, unavailable}}"), (400, ERRORS)],
    },
    Operation {
        method: "get",
        path: "/v1/chaos",
        id: "chaosState",
        access: Access::Cluster,
        summary: "Whether chaos mode is on (clusters started by ringkv dev-cluster only), and each node process's state and the load's",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{enabled: false} on a node not started by ringkv dev-cluster; else {enabled: true, nodes: [{name, state: running | paused | killed, http}], load: running | stopped}"), (502, "The dev cluster's supervisor did not answer")],
    },
    Operation {
        method: "post",
        path: "/v1/chaos/{target}/{action}",
        id: "chaosAct",
        access: Access::Cluster,
        summary: "Chaos mode (dev clusters only): kill, pause, resume or restart a node, cut it off from the others (isolate: the isolated nodes form one side of a partition) or add 200 ms to its links (slow, undone by fast), heal the network, or start or stop a load",
        parameters: &[
            Parameter { name: "target", location: In::Path, required: true, description: "A node's name (node-0...), network, or load", schema: r#"{"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}"# },
            Parameter { name: "action", location: In::Path, required: true, description: "kill, pause, resume, restart, isolate, slow or fast a node; heal the network; start or stop the load", schema: r#"{"type": "string", "enum": ["kill", "pause", "resume", "restart", "isolate", "slow", "fast", "heal", "start", "stop"]}"# },
        ],
        body: None,
        body_schema: None,
        responses: &[(200, "Done: the state, as GET /v1/chaos gives it"), (400, ERRORS), (403, "Not a dev cluster: chaos actions are refused"), (404, "No such node in the dev cluster"), (502, "The dev cluster's supervisor did not answer")],
    },
    Operation {
        method: "put",
        path: "/v1/chaos/links",
        id: "chaosLinks",
        access: Access::Cluster,
        summary: "Chaos mode (dev clusters only): the faults on this node's links, set by its dev-cluster supervisor: the peers it is cut off from, and latency added to its messages",
        parameters: &[],
        body: Some("JSON {blocked: [cluster addresses], delay_ms: 0 to 10000}"),
        body_schema: Some((LINKS_BODY, Raw::No)),
        responses: &[(200, "{blocked, delay_ms}: the faults now set"), (400, ERRORS), (403, "Not a dev cluster: chaos actions are refused")],
    },
    Operation {
        method: "get",
        path: "/v1/cluster/ring",
        id: "ring",
        access: Access::LoggedIn,
        summary: "The hash ring: members with token counts and shares, and every token's owner",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{hash, vnodes, members: [{id, zone, weight, tokens, ownership}], tokens: [[token, id]]}")],
    },
    Operation {
        method: "get",
        path: "/v1/users",
        id: "listUsers",
        access: Access::Cluster,
        summary: "Every user, with grants (never a password or token)",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{users: [{name, password, tokens, grants}]}")],
    },
    Operation {
        method: "put",
        path: "/v1/users/{user}",
        id: "putUser",
        access: Access::Cluster,
        summary: "Create a user, or change its password, tokens or grants; the change spreads to every node",
        parameters: &[USER],
        body: Some("JSON {\"password\"?: 8..1024 bytes, \"new_token\"?: bool, \"revoke_tokens\"?: bool, \"grants\"?: [\"read,write@default\", \"admin@*\", \"read@logs*\"]}"),
        body_schema: Some((USER_BODY, Raw::No)),
        responses: &[(200, "{name, password, tokens, grants, new_token?}: a new token is shown only here"), (400, ERRORS)],
    },
    Operation {
        method: "delete",
        path: "/v1/users/{user}",
        id: "deleteUser",
        access: Access::Cluster,
        summary: "Remove a user on every node",
        parameters: &[USER],
        body: None,
        body_schema: None,
        responses: &[(200, "{removed: name}"), (404, "No such user")],
    },
    Operation {
        method: "get",
        path: "/v1/auth/whoami",
        id: "whoami",
        access: Access::LoggedIn,
        summary: "Who the request acts as, and its grants",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{user, grants}")],
    },
    Operation {
        method: "get",
        path: "/healthz",
        id: "health",
        access: Access::Public,
        summary: "Liveness",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "{status, node_id}")],
    },
    Operation {
        method: "get",
        path: "/metrics",
        id: "metrics",
        access: Access::LoggedIn,
        summary: "Prometheus metrics",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "OpenMetrics text")],
    },
    Operation {
        method: "get",
        path: "/v1/openapi.json",
        id: "openapi",
        access: Access::Public,
        summary: "This document",
        parameters: &[],
        body: None,
        body_schema: None,
        responses: &[(200, "OpenAPI 3 document")],
    },
];

/// Answers every operation of a kind may give, whether or not its entry lists them.
fn implied_responses(operation: &Operation) -> Vec<(u16, &'static str)> {
    let mut implied = Vec::new();
    if !operation.parameters.is_empty() || operation.body.is_some() {
        implied.push((400, ERRORS));
    }
    if operation.body.is_some() {
        implied.push((413, "Body too large"));
        implied.push((415, "Unsupported content type"));
    }
    let names = |name: &str| operation.parameters.iter().any(|p| p.name == name);
    // Any URI may pass the HTTP layer's limit; a key, the key limit.
    implied.push((414, "URI or key too long"));
    if names("If-Match") {
        implied.push((412, "Precondition failed"));
    }
    if names("keyspace") {
        implied.push((404, "No such keyspace"));
    }
    if names("consistency") {
        implied.push((503, "Too few replicas answered, or the node is overloaded"));
    }
    if operation.id == "putKeyspace" {
        implied.push((
            409,
            "The conflict mode of an existing keyspace cannot change",
        ));
    }
    implied
}

/// A schema written in the table as JSON text.
fn schema_of(text: &str) -> Value {
    serde_json::from_str(text).expect("every schema in the table is valid JSON (tested)")
}

/// The OpenAPI 3 document of [`OPERATIONS`].
pub fn document() -> Value {
    let mut paths = Map::new();
    for operation in OPERATIONS {
        let parameters: Vec<Value> = operation
            .parameters
            .iter()
            .map(|p| {
                let location = match p.location {
                    In::Path => "path",
                    In::Query => "query",
                    In::Header => "header",
                };
                json!({ "name": p.name, "in": location, "required": p.required,
                        "description": p.description, "schema": schema_of(p.schema) })
            })
            .collect();
        let mut responses: Map<String, Value> = operation
            .responses
            .iter()
            .map(|(status, description)| {
                (status.to_string(), json!({ "description": description }))
            })
            .collect();
        for (status, description) in implied_responses(operation) {
            responses
                .entry(status.to_string())
                .or_insert_with(|| json!({ "description": description }));
        }
        if operation.access != Access::Public {
            for (status, description) in [
                (
                    401,
                    "No credentials, or wrong ones (WWW-Authenticate says how to log in)",
                ),
                (403, "The user lacks the verb this operation needs"),
                (
                    429,
                    "Too many failed logins from this address; Retry-After says when to retry",
                ),
            ] {
                responses.insert(status.to_string(), json!({ "description": description }));
            }
        }
        let security = match operation.access {
            Access::Public => json!([]),
            _ => json!([{ "basic": [] }, { "bearer": [] }]),
        };
        let mut entry = json!({
            "operationId": operation.id,
            "summary": operation.summary,
            "parameters": parameters,
            "responses": responses,
            "security": security,
        });
        if let (Some(body), Some((schema, raw))) = (operation.body, operation.body_schema) {
            let binary = json!({ "schema": { "type": "string", "format": "binary" } });
            let content = match raw {
                Raw::No => json!({ "application/json": { "schema": schema_of(schema) } }),
                Raw::Yes => json!({ "application/json": { "schema": schema_of(schema) },
                                    "application/octet-stream": binary }),
                Raw::Only => json!({ "application/octet-stream": binary }),
            };
            entry["requestBody"] = json!({ "description": body, "content": content });
        }
        let path = paths.entry(operation.path).or_insert_with(|| json!({}));
        path[operation.method] = entry;
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "ringkv", "version": env!("CARGO_PKG_VERSION"),
                  "description": "REST API of a ringkv node" },
        "paths": paths,
        "components": { "securitySchemes": {
            "basic": { "type": "http", "scheme": "basic" },
            "bearer": { "type": "http", "scheme": "bearer",
                        "description": "An API token from PUT /v1/users/{user} with new_token" },
        } },
    })
}
