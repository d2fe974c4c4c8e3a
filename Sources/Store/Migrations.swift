/// The schema, one numbered step at a time, in each dialect. A step is never edited once
/// shipped: changes are new steps.
enum Migrations {
    struct Step {
        let version: Int
        let name: String
        let sqlite: [String]
        let postgres: [String]
    }

    static let steps: [Step] = [
        Step(version: 1, name: "tasks and events",
             sqlite: [
                 """
                 CREATE TABLE tasks (
                     id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL, request TEXT NOT NULL,
                     created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, ended_at INTEGER,
                     reason TEXT, session TEXT, last_seq INTEGER NOT NULL DEFAULT 0)
                 """,
                 "CREATE INDEX tasks_state ON tasks (state)",
                 "CREATE INDEX tasks_ended ON tasks (ended_at) WHERE ended_at IS NOT NULL",
                 """
                 CREATE TABLE events (
                     task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE, seq INTEGER NOT NULL,
                     type TEXT NOT NULL, time INTEGER NOT NULL, data TEXT NOT NULL,
                     PRIMARY KEY (task_id, seq)) WITHOUT ROWID
                 """,
             ],
             postgres: [
                 """
                 CREATE TABLE tasks (
                     id TEXT PRIMARY KEY, state TEXT NOT NULL, request TEXT NOT NULL,
                     created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, ended_at BIGINT,
                     reason TEXT, session TEXT, last_seq BIGINT NOT NULL DEFAULT 0)
                 """,
                 "CREATE INDEX tasks_state ON tasks (state)",
                 "CREATE INDEX tasks_ended ON tasks (ended_at) WHERE ended_at IS NOT NULL",
                 """
                 CREATE TABLE events (
                     task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE, seq BIGINT NOT NULL,
                     type TEXT NOT NULL, time BIGINT NOT NULL, data TEXT NOT NULL,
                     PRIMARY KEY (task_id, seq))
                 """,
             ]),
        Step(version: 2, name: "cluster: hosts, leases, the shared queue",
             sqlite: [
                 "ALTER TABLE tasks ADD COLUMN origin TEXT",
                 "ALTER TABLE tasks ADD COLUMN host TEXT",
             ],
             postgres: [
                 // epoch: the claiming host's lease epoch, the fencing token of its writes;
                 // queued_at: the store's clock when it (re)entered the queue.
                 "ALTER TABLE tasks ADD COLUMN origin TEXT, ADD COLUMN host TEXT, ADD COLUMN epoch BIGINT, ADD COLUMN queued_at BIGINT",
                 "CREATE INDEX tasks_queue ON tasks (created_at, id) WHERE state = 'queued' AND host IS NULL",
                 "CREATE INDEX tasks_owned ON tasks (host) WHERE host IS NOT NULL AND state IN ('queued', 'starting', 'running')",
                 """
                 CREATE TABLE hosts (
                     id TEXT PRIMARY KEY, address TEXT NOT NULL, version TEXT NOT NULL, epoch BIGINT NOT NULL,
                     started_at BIGINT NOT NULL, renewed_at BIGINT NOT NULL, lease_until BIGINT NOT NULL,
                     max_sessions INT NOT NULL, active INT NOT NULL, available INT NOT NULL, draining BOOLEAN NOT NULL)
                 """,
                 "CREATE SEQUENCE host_epochs",
                 // Every host hears every change (LISTEN kioskd): claimers wake, long polls end,
                 // owners see a stop made on another host. A hint: pollers back it up.
                 """
                 CREATE FUNCTION kioskd_notify_task() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     PERFORM pg_notify('kioskd', json_build_object('t', NEW.id, 's', NEW.state, 'h', NEW.host)::text);
                     RETURN NULL;
                 END $$
                 """,
                 "CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE OF state, host ON tasks FOR EACH ROW EXECUTE FUNCTION kioskd_notify_task()",
                 """
                 CREATE FUNCTION kioskd_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN
                     PERFORM pg_notify('kioskd', json_build_object('e', NEW.task_id, 'q', NEW.seq)::text);
                     RETURN NULL;
                 END $$
                 """,
                 "CREATE TRIGGER events_notify AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION kioskd_notify_event()",
             ]),
    ]
}
