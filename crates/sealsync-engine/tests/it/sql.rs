use sealsync_connectors::sql::DatabaseUrl;
use sealsync_engine::spec::Direction;
use sealsync_engine::{EndpointSpec, LinkSpec};
use sqlx::AssertSqlSafe;

use crate::harness::*;

async fn execute(pool: &sqlx::AnyPool, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_sql_table_syncs_both_ways_with_the_hub() {
    let w = world().await;
    let url = format!("sqlite://{}?mode=rwc", w.path("crm.db").display());
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&url).await.unwrap();
    execute(
        &db,
        "CREATE TABLE people (id TEXT PRIMARY KEY, uid TEXT, full_name TEXT, email TEXT, note TEXT)",
    )
    .await;
    for i in 1..=3 {
        execute(
            &db,
            &format!(
                "INSERT INTO people VALUES ('row-{i}', 'u{i}', 'Person {i}', 'u{i}@example.org', NULL)"
            ),
        )
        .await;
    }
    // One delete out of three is more than the default mass-delete guard lets through.
    let spec = LinkSpec {
        direction: Direction::Both,
        max_delete_share: 1.0,
        ..LinkSpec::default()
    };
    w.engine
        .put_endpoint(
            "crm",
            &EndpointSpec::Sql {
                url: Some(DatabaseUrl::parse(&url).unwrap()),
                url_env: None,
                table: "people".into(),
                id_column: "id".into(),
                etag_column: None,
                columns: ["UID=uid", "FN=full_name", "EMAIL=email", "NOTE=note"]
                    .map(String::from)
                    .to_vec(),
            },
            false,
        )
        .await
        .unwrap();
    w.engine.put_link("crm", "crm", &spec, false).await.unwrap();
    let book = w.vdir_link("book", spec).await;

    // Rows are pulled into the hub, and on to the address book.
    let r = w.sync("crm").await;
    assert_eq!(r.counts.hub_created, 3);
    let hub = w.hub().await;
    assert_eq!(hub.len(), 3);
    assert_eq!(hub["u2"].name, "Person 2");
    assert_eq!(hub["u2"].emails, vec!["u2@example.org".to_owned()]);
    w.sync("book").await;
    assert_eq!(vdir(&book), hub);

    // An edit in the address book reaches the row.
    let file = file_of(&book, "u2");
    put(
        &book,
        &file.file_name().unwrap().to_string_lossy(),
        &card("u2", "Person Two", "u2@example.org", "edited in the book"),
    );
    w.sync("book").await;
    w.sync("crm").await;
    let row: (String, String) =
        sqlx::query_as("SELECT full_name, note FROM people WHERE id = 'row-2'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        row,
        ("Person Two".to_owned(), "edited in the book".to_owned())
    );
    // A run after its own writes finds nothing to do.
    let r = w.sync("crm").await;
    assert_eq!(
        (r.counts.created, r.counts.updated, r.counts.deleted),
        (0, 0, 0)
    );

    // A row deleted in the table deletes the contact, in the hub and in the address book.
    execute(&db, "DELETE FROM people WHERE id = 'row-3'").await;
    w.sync("crm").await;
    w.sync("book").await;
    let hub = w.hub().await;
    assert!(!hub.contains_key("u3"));
    assert_eq!(hub.len(), 2);
    assert_eq!(vdir(&book), hub);
    let rows: Vec<(String,)> = sqlx::query_as("SELECT id FROM people ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows, vec![("row-1".to_owned(),), ("row-2".to_owned(),)]);
}
