use sealsync_connector::compliance::{self, Fidelity};
use sealsync_connector::{ConnectorError, Destination, Etag, RemoteId, Source};
use sealsync_connectors::sql::{DatabaseUrl, SqlShape, SqlTable};
use sqlx::AssertSqlSafe;

const MAPPING: &[&str] = &[
    "UID=uid",
    "FN=full_name",
    "N:given=given",
    "N:family=family",
    "EMAIL=email",
    "TEL=phone",
    "NOTE=note",
];

fn columns() -> Vec<String> {
    MAPPING.iter().map(|s| (*s).to_owned()).collect()
}

fn create_table(table: &str) -> String {
    format!(
        "CREATE TABLE {table} (id TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0, \
         uid TEXT, full_name TEXT, given TEXT, family TEXT, email TEXT, phone TEXT, note TEXT)"
    )
}

async fn execute(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

fn open(url: &str, table: &str, etag: Option<&str>) -> Result<SqlTable, ConnectorError> {
    SqlTable::open(
        DatabaseUrl::parse(url)?,
        SqlShape::parse(table, "id", etag, &columns())?,
    )
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("crm.db").display())
}

#[tokio::test]
async fn sql_sqlite_passes_the_compliance_suite() {
    for etag in [None, Some("version")] {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        execute(&url, &create_table("people")).await;
        compliance::run(|| async { open(&url, "people", etag) }, Fidelity::Basic)
            .await
            .unwrap_or_else(|e| panic!("etag column {etag:?}: {e}"));
    }
}

#[tokio::test]
async fn pg_sql_passes_the_compliance_suite() {
    let Ok(url) = std::env::var("SEALSYNC_TEST_DATABASE_URL") else {
        return;
    };
    for etag in [None, Some("version")] {
        let table = format!("sealsync_sql_{}", uuid::Uuid::new_v4().simple());
        execute(&url, &create_table(&table)).await;
        let result = compliance::run(|| async { open(&url, &table, etag) }, Fidelity::Basic).await;
        execute(&url, &format!("DROP TABLE {table}")).await;
        result.unwrap_or_else(|e| panic!("etag column {etag:?}: {e}"));
    }
}

#[tokio::test]
async fn pg_sql_timestamp_etag_moves_on_every_write() {
    let Ok(url) = std::env::var("SEALSYNC_TEST_DATABASE_URL") else {
        return;
    };
    let schema = format!("sealsync_s_{}", uuid::Uuid::new_v4().simple());
    execute(&url, &format!("CREATE SCHEMA {schema}")).await;
    execute(
        &url,
        &format!(
            "CREATE TABLE {schema}.people (id TEXT PRIMARY KEY, updated_at TIMESTAMPTZ, \
             uid TEXT, full_name TEXT, given TEXT, family TEXT, email TEXT, phone TEXT, note TEXT)"
        ),
    )
    .await;
    let table = format!("{schema}.people");
    let result = compliance::run(
        || async { open(&url, &table, Some("updated_at")) },
        Fidelity::Basic,
    )
    .await;
    execute(&url, &format!("DROP SCHEMA {schema} CASCADE")).await;
    result.unwrap();
}

#[tokio::test]
async fn sql_rows_edited_by_the_application_are_conflicts_and_bad_rows_are_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    execute(&url, &create_table("people")).await;
    let t = open(&url, "people", Some("version")).unwrap();
    let meta = t.create(&compliance::sample_contacts()[0]).await.unwrap();
    // The application edits the row and moves its version, as it promised to.
    execute(
        &url,
        &format!(
            "UPDATE people SET note = 'app edit', version = version + 1 WHERE id = '{}'",
            meta.id
        ),
    )
    .await;
    let err = t
        .update(&meta.id, &meta.etag, &compliance::sample_contacts()[1])
        .await;
    assert_eq!(err.unwrap_err(), ConnectorError::Conflict);
    assert_eq!(
        t.delete(&meta.id, &meta.etag).await,
        Err(ConnectorError::Conflict)
    );

    // A row with nothing mapped is listed, and fetching it says why it cannot be read.
    execute(
        &url,
        "INSERT INTO people (id, version) VALUES ('empty-row', 1)",
    )
    .await;
    let listed = t.list().await.unwrap();
    assert_eq!(listed.items.len(), 2);
    let empty = RemoteId::parse("empty-row").unwrap();
    let got = t.fetch(&[empty.clone(), meta.id.clone()]).await.unwrap();
    assert!(matches!(got[0].1, Err(ConnectorError::Invalid(_))));
    assert!(got[1].1.is_ok());
    // Updating a row that is gone says so.
    let gone = RemoteId::parse("no-such-row").unwrap();
    assert_eq!(
        t.update(&gone, &Etag::new("1"), &compliance::sample_contacts()[0])
            .await
            .unwrap_err(),
        ConnectorError::NotFound
    );
}

#[tokio::test]
async fn sql_values_are_bound_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    execute(&url, &create_table("people")).await;
    let t = open(&url, "people", None).unwrap();
    let mut c = compliance::sample_contacts()[0].clone();
    c.set_text("NOTE", Some("x'); DROP TABLE people; --"));
    let meta = t.create(&c).await.unwrap();
    let got = t.fetch(&[meta.id]).await.unwrap();
    let contact = got[0].1.as_ref().unwrap().contact.clone();
    assert_eq!(
        contact.note().as_deref(),
        Some("x'); DROP TABLE people; --")
    );
    assert_eq!(t.list().await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn sql_errors_never_show_the_url_or_password() {
    // Nothing listens on port 1: the connection is refused.
    let url = "postgres://sealsync:hunter2-secret@127.0.0.1:1/contacts";
    let t = open(url, "people", None).unwrap();
    let err = t.list().await.unwrap_err();
    assert!(matches!(err, ConnectorError::Unavailable(_)), "{err}");
    let shown = format!("{err} {err:?} {t:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("127.0.0.1"), "{shown}");

    // A table that is not there is a configuration error naming the table, not the URL.
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    execute(&url, &create_table("people")).await;
    let err = open(&url, "persons", None)
        .unwrap()
        .list()
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Config(_)), "{err}");
    assert!(err.to_string().contains("persons"), "{err}");
    assert!(!err.to_string().contains("crm.db"), "{err}");

    // A bad URL is refused without being repeated.
    let err = DatabaseUrl::parse("mysql://root:hunter2-secret@db/x").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn pg_sql_wrong_password_is_unavailable_without_the_password() {
    let Ok(url) = std::env::var("SEALSYNC_TEST_DATABASE_URL") else {
        return;
    };
    let Some(rest) = url.strip_prefix("postgres://") else {
        return;
    };
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    let bad = format!("postgres://no_such_user_x:hunter2-secret@{host}");
    let err = open(&bad, "people", None)
        .unwrap()
        .list()
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Unavailable(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!err.to_string().contains("no_such_user_x"), "{err}");
}

/// Two writers holding the same etag: one update wins, the other is a conflict.
async fn one_of_two_racing_updates_wins(url: &str, table: &str) {
    for etag in [None, Some("version")] {
        let a = open(url, table, etag).unwrap();
        let b = open(url, table, etag).unwrap();
        let samples = compliance::sample_contacts();
        let meta = a.create(&samples[0]).await.unwrap();
        b.list().await.unwrap();
        let (ra, rb) = tokio::join!(
            a.update(&meta.id, &meta.etag, &samples[1]),
            b.update(&meta.id, &meta.etag, &samples[2]),
        );
        let conflicts = [&ra, &rb]
            .iter()
            .filter(|r| r.as_ref().err() == Some(&ConnectorError::Conflict))
            .count();
        assert_eq!(conflicts, 1, "etag column {etag:?}: {ra:?} {rb:?}");
        assert!(ra.is_ok() || rb.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sqlite_racing_updates_are_one_win_and_one_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    execute(&url, &create_table("people")).await;
    one_of_two_racing_updates_wins(&url, "people").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_sql_racing_updates_are_one_win_and_one_conflict() {
    let Ok(url) = std::env::var("SEALSYNC_TEST_DATABASE_URL") else {
        return;
    };
    let table = format!("sealsync_sql_{}", uuid::Uuid::new_v4().simple());
    execute(&url, &create_table(&table)).await;
    one_of_two_racing_updates_wins(&url, &table).await;
    execute(&url, &format!("DROP TABLE {table}")).await;
}
