//! Example data shared by several test files.
use super::{count, TestDb};
use postgres::Client;

/// Mattermost: N tokens (40 % expired, 10 % never expiring, rest live), one session per token
/// for the first half.
pub fn mattermost_tokens(c: &mut Client, n: i64) {
    c.batch_execute(&format!(
        "INSERT INTO mattermost.users VALUES ('bulk', 'bulk', 0);
         INSERT INTO mattermost.useraccesstokens (id, token, userid, expiresat)
         SELECT 't' || g, 'secret' || g, 'bulk',
                CASE WHEN g % 10 < 4 THEN (extract(epoch FROM now() - g * interval '1 second') * 1000)::bigint
                     WHEN g % 10 = 4 THEN 0
                     ELSE (extract(epoch FROM now() + interval '1 day') * 1000)::bigint END
           FROM generate_series(1, {n}) g;
         INSERT INTO mattermost.sessions (id, token, userid, createat, useraccesstokenid)
         SELECT 's' || g, 'secret' || g, 'bulk', 0, 't' || g FROM generate_series(1, {n} / 2) g;"
    ))
    .unwrap();
}

pub const MM_POLICY: &str = "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat',
    time_kind => 'unix_ms', dependents => 'delete', audit => '{id,userid,expiresat}', batch_size => 100)";

/// The Mattermost example with `n` tokens (see `mattermost_tokens`): a connection.
pub fn mattermost_example(db: &TestDb<'_>, n: i64) -> Client {
    db.load_example("mattermost.sql");
    let mut c = db.connect();
    mattermost_tokens(&mut c, n);
    c
}

/// The Mattermost example with `n` tokens and the `mm_pats` policy: a connection, and how
/// many tokens are due.
pub fn mattermost_with_policy(db: &TestDb<'_>, n: i64) -> (Client, i64) {
    let mut c = mattermost_example(db, n);
    c.batch_execute(MM_POLICY).unwrap();
    let due = count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)");
    (c, due)
}

pub const ADD_LINK: &str = "SELECT lifecycle.add_link('upstream_user_session',
    'mas.upstream_oauth_authorization_sessions', 'upstream_oauth_authorization_session_id', 'user_session_id',
    'mas.user_session_authentications', 'upstream_oauth_authorization_session_id', 'user_session_id')";

/// `n` upstream sessions, each authenticated into its own user session (ids from md5, so
/// tests can name them), all with a NULL link: the state before MAS's backfill migration.
pub fn upstream_history(c: &mut Client, n: i32) {
    c.batch_execute(&format!(
        "INSERT INTO mas.user_sessions (user_session_id, user_id, created_at)
         SELECT md5('u' || g)::uuid, '01890000-0000-0000-0000-000000000001', now() FROM generate_series(1, {n}) g;
         INSERT INTO mas.upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id, upstream_oauth_provider_id, state, created_at)
         SELECT md5('s' || g)::uuid, '01890000-0000-0000-0000-0000000000aa', 'st' || g, now() FROM generate_series(1, {n}) g;
         INSERT INTO mas.user_session_authentications
         SELECT md5('a' || g)::uuid, md5('u' || g)::uuid, md5('s' || g)::uuid, now() FROM generate_series(1, {n}) g;
         ANALYZE mas.upstream_oauth_authorization_sessions;"
    ))
    .unwrap();
}

pub fn unfilled(c: &mut Client) -> i64 {
    count(
        c,
        "SELECT count(*) FROM mas.upstream_oauth_authorization_sessions s
               WHERE s.user_session_id IS NULL AND EXISTS (SELECT 1 FROM mas.user_session_authentications a
                     WHERE a.upstream_oauth_authorization_session_id = s.upstream_oauth_authorization_session_id)",
    )
}
