-- Code Interpreter: custom interpreters and the sessions of every interpreter (the system
-- interpreter `aws.codeinterpreter.v1` has no row). A session's sandbox lives in the process
-- named by `node`; the row is what Get/List show, before and after it ends.
CREATE TABLE code_interpreters (
    account_id          TEXT NOT NULL,
    interpreter_id      TEXT NOT NULL,
    name                TEXT NOT NULL,
    arn                 TEXT NOT NULL,
    -- The modelled definition (description, role, network, certificates, ...) as JSON.
    definition          TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (account_id, interpreter_id)
);
CREATE UNIQUE INDEX code_interpreters_by_name ON code_interpreters (account_id, name);
CREATE INDEX code_interpreters_by_created ON code_interpreters (account_id, created_at, interpreter_id);

CREATE TABLE code_interpreter_sessions (
    account_id          TEXT NOT NULL,
    interpreter_id      TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    name                TEXT,
    timeout_seconds     BIGINT NOT NULL,
    status              TEXT NOT NULL,
    node                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (account_id, interpreter_id, session_id)
);
CREATE INDEX code_interpreter_sessions_by_created
    ON code_interpreter_sessions (account_id, interpreter_id, created_at, session_id);
CREATE INDEX code_interpreter_sessions_by_node ON code_interpreter_sessions (node, status);
