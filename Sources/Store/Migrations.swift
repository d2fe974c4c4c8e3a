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
    ]
}
