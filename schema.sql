-- procreche schema. Applied at every start and by `procreche migrate`: every statement is
-- idempotent, and the whole file runs in one transaction under an advisory lock.

CREATE TABLE IF NOT EXISTS terms_versions (
    version       integer PRIMARY KEY CHECK (version > 0),
    text          text NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS structures (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    guardians_may_post    boolean NOT NULL DEFAULT false,
    retention_months      integer NOT NULL DEFAULT 12 CHECK (retention_months BETWEEN 1 AND 120),
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS groups (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    structure_id  bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    UNIQUE (structure_id, name)
);

CREATE TABLE IF NOT EXISTS users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email           text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    display_name    text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    password_hash   text,
    must_reset_password boolean NOT NULL DEFAULT false,
    disabled_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS memberships (
    structure_id  bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('admin', 'staff', 'guardian')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (structure_id, user_id, role)
);
CREATE INDEX IF NOT EXISTS memberships_user ON memberships (user_id);

-- Which groups a staff member works in.
CREATE TABLE IF NOT EXISTS staff_groups (
    group_id  bigint NOT NULL REFERENCES groups ON DELETE CASCADE,
    user_id   bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX IF NOT EXISTS staff_groups_user ON staff_groups (user_id);

CREATE TABLE IF NOT EXISTS children (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    structure_id  bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    group_id      bigint REFERENCES groups ON DELETE SET NULL,
    first_name    text NOT NULL CHECK (length(first_name) BETWEEN 1 AND 100),
    last_name     text NOT NULL CHECK (length(last_name) BETWEEN 1 AND 100),
    birth_date    date,
    enrolled_on   date NOT NULL,
    left_on       date CHECK (left_on IS NULL OR left_on >= enrolled_on),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS children_structure ON children (structure_id);
CREATE INDEX IF NOT EXISTS children_group ON children (group_id);
CREATE INDEX IF NOT EXISTS children_left_on ON children (left_on) WHERE left_on IS NOT NULL;

-- A household: the guardians living together and the children they share. A child of
-- separated parents belongs to two households.
CREATE TABLE IF NOT EXISTS families (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    structure_id  bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (structure_id, name)
);

CREATE TABLE IF NOT EXISTS family_members (
    family_id  bigint NOT NULL REFERENCES families ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    PRIMARY KEY (family_id, user_id)
);
CREATE INDEX IF NOT EXISTS family_members_user ON family_members (user_id);

CREATE TABLE IF NOT EXISTS family_children (
    family_id  bigint NOT NULL REFERENCES families ON DELETE CASCADE,
    child_id   bigint NOT NULL REFERENCES children ON DELETE CASCADE,
    PRIMARY KEY (family_id, child_id)
);
CREATE INDEX IF NOT EXISTS family_children_child ON family_children (child_id);

CREATE TABLE IF NOT EXISTS guardianships (
    child_id            bigint NOT NULL REFERENCES children ON DELETE CASCADE,
    user_id             bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    parental_authority  boolean NOT NULL,
    consultation        boolean NOT NULL DEFAULT true,
    may_post            boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (child_id, user_id)
);
CREATE INDEX IF NOT EXISTS guardianships_user ON guardianships (user_id);

-- Consent history: a grant is a row; a revocation closes it. Never updated otherwise.
CREATE TABLE IF NOT EXISTS consents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    child_id       bigint NOT NULL REFERENCES children ON DELETE CASCADE,
    guardian_id    bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('publication')),
    granted_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz CHECK (revoked_at IS NULL OR revoked_at >= granted_at),
    terms_version  integer NOT NULL REFERENCES terms_versions,
    declaration    text NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_child ON consents (child_id, kind);
CREATE UNIQUE INDEX IF NOT EXISTS consents_one_active
    ON consents (child_id, guardian_id, kind) WHERE revoked_at IS NULL;

CREATE TABLE IF NOT EXISTS terms_acceptances (
    user_id      bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    version      integer NOT NULL REFERENCES terms_versions,
    accepted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, version)
);

-- A photo or video, from upload to publication (realtime/media.py). The table is also the
-- processing queue: a worker claims a 'processing' row with FOR UPDATE SKIP LOCKED and a
-- lease (claimed_until), so a job survives worker crashes and Redis restarts alike.
CREATE TABLE IF NOT EXISTS media (
    id            uuid PRIMARY KEY,
    structure_id  bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    uploader_id   bigint REFERENCES users ON DELETE SET NULL,
    state         text NOT NULL CHECK (state IN ('uploaded', 'processing', 'ready', 'rejected')),
    content_type  text,
    bytes         bigint CHECK (bytes >= 0),
    width         integer,
    height        integer,
    duration_ms   integer,
    idempotency_key text,
    reject_code   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (uploader_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS media_structure ON media (structure_id);
ALTER TABLE media ADD COLUMN IF NOT EXISTS kind text CHECK (kind IN ('image', 'video'));
-- The stored objects: {"original"|"screen"|"thumb": {"key", "type", "width", "height", "bytes"}}.
ALTER TABLE media ADD COLUMN IF NOT EXISTS renditions jsonb NOT NULL DEFAULT '{}';
ALTER TABLE media ADD COLUMN IF NOT EXISTS incoming_key text;
ALTER TABLE media ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0;
ALTER TABLE media ADD COLUMN IF NOT EXISTS claimed_until timestamptz;
ALTER TABLE media ADD COLUMN IF NOT EXISTS ready_at timestamptz;
-- Publication: the message that shows the media, reserved by the publish (channel,
-- client msg_id) before the message exists, its id set once it does.
ALTER TABLE media ADD COLUMN IF NOT EXISTS channel text;
ALTER TABLE media ADD COLUMN IF NOT EXISTS msg_key text;
ALTER TABLE media ADD COLUMN IF NOT EXISTS message_id uuid;
ALTER TABLE media ADD COLUMN IF NOT EXISTS children bigint[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS media_queue ON media (created_at) WHERE state = 'processing';
CREATE INDEX IF NOT EXISTS media_message ON media (message_id) WHERE message_id IS NOT NULL;

-- The record of every message acknowledged to its sender, written by the persistence
-- worker. (channel, seq) is the resume position; client_msg_id makes a retry a no-op.
CREATE TABLE IF NOT EXISTS messages (
    id             uuid PRIMARY KEY,
    channel        text NOT NULL,
    seq            bigint NOT NULL CHECK (seq > 0),
    author_id      bigint REFERENCES users ON DELETE SET NULL,
    author_name    text NOT NULL,
    kind           text NOT NULL,
    body           jsonb NOT NULL,
    client_msg_id  text NOT NULL,
    created_at     timestamptz NOT NULL,
    withdrawn_at   timestamptz,
    UNIQUE (channel, seq)
);
CREATE INDEX IF NOT EXISTS messages_author ON messages (author_id);

-- Withdrawals as the persistence worker receives them. No foreign key: a withdrawal may be
-- persisted before the message it withdraws (reclaimed entries come out of order); the
-- message's insert then picks it up.
CREATE TABLE IF NOT EXISTS message_withdrawals (
    message_id  uuid PRIMARY KEY,
    channel     text NOT NULL,
    reason      text NOT NULL CHECK (reason IN ('consent_revoked', 'moderation', 'author')),
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS message_children (
    message_id  uuid NOT NULL REFERENCES messages ON DELETE CASCADE,
    child_id    bigint NOT NULL REFERENCES children ON DELETE CASCADE,
    PRIMARY KEY (message_id, child_id)
);
CREATE INDEX IF NOT EXISTS message_children_child ON message_children (child_id);

-- A media belongs to one message (media.message_id); this link table was never used.
DROP TABLE IF EXISTS message_media;

-- A user's request to have their account erased, waiting for an admin of their structure
-- to confirm it (by erasing the account, which deletes the request with the user).
CREATE TABLE IF NOT EXISTS erasure_requests (
    user_id       bigint PRIMARY KEY REFERENCES users ON DELETE CASCADE,
    requested_at  timestamptz NOT NULL DEFAULT now()
);

-- Maintenance mode (realtime/maintenance.py): one row while it is on. Kept in PostgreSQL
-- so that it survives a Redis restart and is read by every gateway that starts meanwhile.
CREATE TABLE IF NOT EXISTS maintenance (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    message    text NOT NULL CHECK (length(message) BETWEEN 1 AND 500),
    since      timestamptz NOT NULL DEFAULT now()
);

-- Tombstones of erased messages (realtime/erasure.py): ids only. The persistence worker
-- never inserts a message whose id is here, whenever its ingest entry reaches it.
CREATE TABLE IF NOT EXISTS erased_messages (
    id  uuid PRIMARY KEY,
    at  timestamptz NOT NULL DEFAULT now()
);

-- Read position of a user in a channel (a receipt covers every seq up to it).
CREATE TABLE IF NOT EXISTS receipts (
    channel   text NOT NULL,
    user_id   bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    seq       bigint NOT NULL CHECK (seq >= 0),
    read_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, user_id)
);

-- A report of a message (terms art. 14): one row per reporter and message. The open
-- reports of one message form one case of the structure's moderation queue, resolved
-- together. No foreign key to messages: a message is reported as soon as it is delivered,
-- possibly before the persistence worker has written it.
CREATE TABLE IF NOT EXISTS reports (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   uuid NOT NULL,
    channel      text NOT NULL,
    structure_id bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    reporter_id  bigint REFERENCES users ON DELETE SET NULL,
    reason       text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'withdrawn', 'dismissed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_by  bigint REFERENCES users ON DELETE SET NULL,
    resolved_at  timestamptz
);
-- The first version of this table was never written to: it referenced messages and had
-- neither channel nor structure.
ALTER TABLE reports DROP CONSTRAINT IF EXISTS reports_message_id_fkey;
ALTER TABLE reports ADD COLUMN IF NOT EXISTS channel text NOT NULL;
ALTER TABLE reports ADD COLUMN IF NOT EXISTS structure_id bigint NOT NULL REFERENCES structures ON DELETE CASCADE;
DROP INDEX IF EXISTS reports_open;
CREATE INDEX IF NOT EXISTS reports_queue ON reports (structure_id, created_at) WHERE state = 'open';
CREATE INDEX IF NOT EXISTS reports_message ON reports (message_id);
CREATE INDEX IF NOT EXISTS reports_reporter ON reports (reporter_id);
-- A reporter has one open report of a message: reporting it again changes nothing.
CREATE UNIQUE INDEX IF NOT EXISTS reports_one_open ON reports (message_id, reporter_id) WHERE state = 'open';

-- Append-only: the application role is never granted UPDATE or DELETE on it.
CREATE TABLE IF NOT EXISTS audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor_id      bigint,
    structure_id  bigint,
    action        text NOT NULL,
    subject_type  text,
    subject_id    text,
    details       jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_structure_at ON audit_log (structure_id, at);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_id, at);

-- Login sessions: the token is given to the client once; only its SHA-256 is stored.
-- An invitation: the link by which the owner of an account created by an admin sets its
-- first password. Only the token's SHA-256 is kept; one link per account is valid at a time.
CREATE TABLE IF NOT EXISTS invitations (
    token_hash    bytea PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    structure_id  bigint NOT NULL REFERENCES structures ON DELETE CASCADE,
    created_by    bigint REFERENCES users ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);
CREATE INDEX IF NOT EXISTS invitations_user ON invitations (user_id);

CREATE TABLE IF NOT EXISTS sessions (
    token_hash  bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);

-- A data export (portability, docs/export.md): the request, its job, and the zip built in
-- the media store under object_key. The table is the queue, like `media`: a worker claims
-- a queued row (FOR UPDATE SKIP LOCKED) under a lease. Requester and structure are set to
-- NULL rather than cascading, so that an erased account's zip is still found and deleted
-- by the expiry sweep.
CREATE TABLE IF NOT EXISTS exports (
    id             uuid PRIMARY KEY,
    requester_id   bigint REFERENCES users ON DELETE SET NULL,
    structure_id   bigint REFERENCES structures ON DELETE SET NULL,
    scope          text NOT NULL CHECK (scope IN ('me', 'child', 'household', 'structure')),
    subject        bigint,
    state          text NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'ready', 'failed', 'expired')),
    progress       integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    object_key     text,
    bytes          bigint CHECK (bytes >= 0),
    attempts       integer NOT NULL DEFAULT 0,
    claimed_until  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz,
    expires_at     timestamptz,
    CHECK ((scope = 'me') = (subject IS NULL))
);
CREATE INDEX IF NOT EXISTS exports_requester ON exports (requester_id, created_at);
CREATE INDEX IF NOT EXISTS exports_queue ON exports (created_at) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS exports_expiry ON exports (expires_at) WHERE state = 'ready';
-- One export of a subject in the making per requester: asking again answers that one.
CREATE UNIQUE INDEX IF NOT EXISTS exports_one_pending
    ON exports (requester_id, scope, coalesce(subject, 0)) WHERE state IN ('queued', 'running');

INSERT INTO terms_versions (version, text) VALUES (1,
'Conditions générales d''utilisation de procreche, version 1.

procreche est une plateforme fermée d''échange entre une structure d''accueil de jeunes enfants et les familles. Seuls les titulaires d''un compte y accèdent ; chacun garde son mot de passe pour lui.
Seule la structure alimente la plateforme. Un parent consulte ce qui concerne ses enfants, sur autorisation de consultation, et n''écrit que là où la structure l''y autorise.
Une photo, une vidéo ou tout contenu identifiant un enfant n''est publié qu''avec le consentement de chaque titulaire de l''autorité parentale. Ce consentement est gratuit, vaut pour toute la durée de l''accueil et peut être retiré à tout moment : plus rien de nouveau n''est alors publié et ce qui l''a été est retiré de la vue des familles.
Tout utilisateur peut signaler un contenu. La structure est responsable du traitement des données personnelles ; chacun peut exporter, rectifier et effacer ses données. Les contenus sont conservés au plus la durée fixée par la structure après le départ de l''enfant.')
ON CONFLICT (version) DO NOTHING;
