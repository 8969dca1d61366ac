//! One table of a SQLite or PostgreSQL database as a collection, through a column mapping.
//!
//! A row's remote id is its `id_column` (text; new rows get a random UUID). Its etag is the
//! `etag_column` when one is named (a version or time the user's application keeps; this
//! connector moves it on its own writes too), else a SHA-256 of the row's mapped values. The
//! mapping uses the CSV mapping's targets (`FN`, `N:given`, `TEL;TYPE=cell`, …) and the CSV
//! code's value placement, so a column means the same here as in a CSV file.
//!
//! Updates and deletes check the etag and write in one transaction that holds the row (a
//! `SELECT … FOR UPDATE` on PostgreSQL, a write transaction on SQLite), so a concurrent edit
//! is a conflict, never overwritten. Identifiers are validated and quoted; values are always
//! bound, never put into the SQL text. The database URL may hold a password: it lives in a
//! redacting type and no error carries it, nor any value of a row (database errors are
//! reduced to their SQLSTATE code).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, RemoteId, Snapshot, Source,
};
use sealsync_contact::Contact;
use sealsync_contact::csv::{Column, CsvLayout, CsvReader, CsvWriter};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AssertSqlSafe, Row as _};
use tokio::sync::OnceCell;

/// A database URL (`sqlite:…`, `postgres://…`). It may carry a password, so it is never shown.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    /// A URL of a database kind this connector speaks. The error never repeats the URL.
    pub fn parse(s: &str) -> Result<Self, ConnectorError> {
        let url = Self(SecretString::from(s.trim().to_owned()));
        url.dialect()?;
        Ok(url)
    }

    fn dialect(&self) -> Result<Dialect, ConnectorError> {
        let url = self.0.expose_secret();
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(ConnectorError::Config(
                "the database URL must start with sqlite:, postgres:// or postgresql://".into(),
            ))
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl([REDACTED])")
    }
}

impl PartialEq for DatabaseUrl {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret() == other.0.expose_secret()
    }
}

impl Eq for DatabaseUrl {}

/// Serialized in clear: it is only ever stored inside a sealed endpoint configuration.
impl serde::Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = secrecy::zeroize::Zeroizing::new(String::deserialize(d)?);
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Which table, which columns, and what each column holds: everything but the database.
#[derive(Debug, Clone)]
pub struct SqlShape {
    table: TableName,
    id: Ident,
    etag: Option<Ident>,
    columns: Vec<Ident>,
    layout: CsvLayout,
}

impl SqlShape {
    /// `table` is `name` or `schema.name`; each of `columns` is `TARGET=column`, where TARGET
    /// is a CSV mapping target (`FN`, `N:given`, `EMAIL`, `TEL;TYPE=cell`); a target given
    /// twice is that property's second occurrence.
    pub fn parse(
        table: &str,
        id_column: &str,
        etag_column: Option<&str>,
        columns: &[String],
    ) -> Result<Self, ConnectorError> {
        let table = TableName::parse(table)?;
        let id = Ident::parse(id_column, "id_column")?;
        let etag = etag_column
            .map(|e| Ident::parse(e, "etag_column"))
            .transpose()?;
        if columns.is_empty() {
            return Err(ConnectorError::Config(
                "map at least one column (TARGET=column, e.g. FN=full_name)".into(),
            ));
        }
        let mut idents: Vec<Ident> = Vec::new();
        let mut layout_columns: Vec<Column> = Vec::new();
        for entry in columns {
            let Some((target, column)) = entry.rsplit_once('=') else {
                return Err(ConnectorError::Config(format!(
                    "column mapping {entry:?}: expected TARGET=column, e.g. FN=full_name"
                )));
            };
            let column = Ident::parse(column.trim(), "mapped column")?;
            if column == id || Some(&column) == etag.as_ref() || idents.contains(&column) {
                return Err(ConnectorError::Config(format!(
                    "column {:?} is used twice (mapped columns, id_column and etag_column must differ)",
                    column.0
                )));
            }
            layout_columns.push(mapping_target(&column.0, target.trim())?);
            idents.push(column);
        }
        if etag.as_ref() == Some(&id) {
            return Err(ConnectorError::Config(
                "id_column and etag_column must differ".into(),
            ));
        }
        Ok(Self {
            table,
            id,
            etag,
            columns: idents,
            layout: CsvLayout {
                delimiter: b',',
                columns: layout_columns,
            },
        })
    }
}

/// A table as a collection.
#[derive(Debug)]
pub struct SqlTable {
    url: DatabaseUrl,
    dialect: Dialect,
    shape: SqlShape,
    sql: Statements,
    ready: OnceCell<Ready>,
}

impl SqlTable {
    /// Checks the settings; connects on first use, so opening never waits on the network.
    pub fn open(url: DatabaseUrl, shape: SqlShape) -> Result<Self, ConnectorError> {
        let dialect = url.dialect()?;
        let sql = Statements::new(&shape, dialect);
        Ok(Self {
            url,
            dialect,
            shape,
            sql,
            ready: OnceCell::new(),
        })
    }

    async fn ready(&self) -> Result<&Ready, ConnectorError> {
        self.ready.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Ready, ConnectorError> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect(self.url.0.expose_secret())
            .await
            .map_err(|e| db_error(&e, "connecting to the database"))?;
        // Every named column must exist and be readable before anything is listed or written.
        sqlx::query(AssertSqlSafe(self.sql.probe.clone()))
            .fetch_all(&pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(_) => ConnectorError::Config(format!(
                    "table {} or one of its named columns does not exist or cannot be read",
                    self.shape.table
                )),
                e => db_error(&e, "reading the table"),
            })?;
        let etag = match &self.shape.etag {
            Some(column) => Some(self.etag_kind(&pool, column).await?),
            None => None,
        };
        Ok(Ready { pool, etag })
    }

    /// How this connector moves the etag column on its writes, from the column's declared type.
    async fn etag_kind(&self, pool: &AnyPool, column: &Ident) -> Result<EtagKind, ConnectorError> {
        let table = &self.shape.table;
        let found: Option<AnyRow> = match self.dialect {
            Dialect::Sqlite => sqlx::query(
                "SELECT CAST(type AS TEXT) FROM pragma_table_info($1, $2) WHERE name = $3",
            )
            .bind(table.name.0.clone())
            .bind(table.schema.as_ref().map_or("main", |s| s.0.as_str()).to_owned())
            .bind(column.0.clone())
            .fetch_optional(pool)
            .await,
            Dialect::Postgres => match &table.schema {
                Some(schema) => sqlx::query(
                    "SELECT CAST(data_type AS TEXT) FROM information_schema.columns \
                     WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
                )
                .bind(schema.0.clone()),
                None => sqlx::query(
                    "SELECT CAST(data_type AS TEXT) FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2",
                ),
            }
            .bind(table.name.0.clone())
            .bind(column.0.clone())
            .fetch_optional(pool)
            .await,
        }
        .map_err(|e| db_error(&e, "reading the table's columns"))?;
        let Some(row) = found else {
            return Err(ConnectorError::Config(format!(
                "etag column {:?} is not a column of table {table}",
                column.0
            )));
        };
        let ty = row
            .try_get::<Option<String>, _>(0)
            .map_err(|e| db_error(&e, "reading the table's columns"))?
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(
            if ty.contains("int") || ty == "numeric" || ty == "decimal" {
                EtagKind::Counter
            } else if self.dialect == Dialect::Postgres && ty.starts_with("timestamp") {
                EtagKind::PgClock
            } else if self.dialect == Dialect::Sqlite
                && (ty.contains("date") || ty.contains("time"))
            {
                EtagKind::SqliteClock
            } else {
                EtagKind::Token
            },
        )
    }

    /// The contact a fetched row holds, with its meta.
    fn item(&self, row: &AnyRow) -> Option<(RemoteId, Result<Item, ConnectorError>)> {
        let id = self
            .remote_id(row.try_get::<Option<String>, _>(0).ok()?)
            .ok()?;
        let item = self
            .read_row(row)
            .map_err(ConnectorError::Invalid)
            .and_then(|(_, etag, cells)| {
                let contact = cells_to_contact(&self.shape.layout, &cells).ok_or_else(|| {
                    ConnectorError::Invalid(format!(
                        "row {id} of {}: the mapped columns hold no contact",
                        self.shape.table
                    ))
                })?;
                Ok(Item {
                    meta: ItemMeta {
                        id: id.clone(),
                        etag,
                        modified_ms: None,
                    },
                    contact,
                })
            });
        Some((id, item))
    }

    /// Id, etag and mapped cells of a row selected with [`Statements::select_columns`].
    fn read_row(&self, row: &AnyRow) -> Result<(RemoteId, Etag, Vec<Option<String>>), String> {
        let text = |i: usize| -> Result<Option<String>, String> {
            row.try_get::<Option<String>, _>(i).map_err(|_| {
                format!(
                    "a value of table {} is not readable as text",
                    self.shape.table
                )
            })
        };
        let id = self.remote_id(text(0)?)?;
        let first = if self.shape.etag.is_some() { 2 } else { 1 };
        let cells = (first..first + self.shape.columns.len())
            .map(text)
            .collect::<Result<Vec<_>, _>>()?;
        let etag = match self.shape.etag {
            Some(_) => Etag::new(text(1)?.unwrap_or_default()),
            None => hash_etag(&cells),
        };
        Ok((id, etag, cells))
    }

    fn remote_id(&self, id: Option<String>) -> Result<RemoteId, String> {
        id.as_deref()
            .and_then(|id| RemoteId::parse(id).ok())
            .ok_or_else(|| {
                format!(
                    "a row of table {} has an empty id or one with control characters; \
                     the table is left alone until it is fixed",
                    self.shape.table
                )
            })
    }

    /// The cells a contact becomes, or `Invalid` if none of the mapped columns can hold it.
    fn cells(&self, contact: &Contact) -> Result<Vec<Option<String>>, ConnectorError> {
        let cells = contact_to_cells(&self.shape.layout, contact)?;
        if cells.iter().all(Option::is_none) {
            return Err(ConnectorError::Invalid(format!(
                "the contact has nothing the mapped columns of {} can hold",
                self.shape.table
            )));
        }
        Ok(cells)
    }

    /// Begins a transaction that will hold the rows it reads until it ends.
    async fn begin(
        &self,
        pool: &AnyPool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, ConnectorError> {
        let tx = match self.dialect {
            // A deferred SQLite transaction would take the write lock only at the write,
            // after the etag was checked.
            Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => pool.begin().await,
        };
        tx.map_err(|e| db_error(&e, "starting a transaction"))
    }

    /// The row's etag as it is now, holding the row; `None` if there is no such row.
    async fn locked_etag(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &RemoteId,
    ) -> Result<Option<Etag>, ConnectorError> {
        let row = sqlx::query(AssertSqlSafe(self.sql.select_one_locked.clone()))
            .bind(id.as_str().to_owned())
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| db_error(&e, "reading a row"))?;
        row.map(|r| self.read_row(&r).map(|(_, etag, _)| etag))
            .transpose()
            .map_err(ConnectorError::Invalid)
    }

    /// The row's meta after a write in `tx`.
    async fn written_meta(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &RemoteId,
    ) -> Result<ItemMeta, ConnectorError> {
        let row = sqlx::query(AssertSqlSafe(self.sql.select_one.clone()))
            .bind(id.as_str().to_owned())
            .fetch_optional(&mut **tx)
            .await
            .map_err(|e| db_error(&e, "reading a written row"))?
            .ok_or(ConnectorError::NotFound)?;
        let (id, etag, _) = self.read_row(&row).map_err(ConnectorError::Invalid)?;
        Ok(ItemMeta {
            id,
            etag,
            modified_ms: None,
        })
    }
}

#[async_trait]
impl Source for SqlTable {
    async fn list(&self) -> Result<Snapshot, ConnectorError> {
        let ready = self.ready().await?;
        let rows = sqlx::query(AssertSqlSafe(self.sql.list.clone()))
            .fetch_all(&ready.pool)
            .await
            .map_err(|e| db_error(&e, "listing the table"))?;
        let items = rows
            .iter()
            .map(|row| {
                let (id, etag) = match self.shape.etag {
                    Some(_) => {
                        let id = row.try_get::<Option<String>, _>(0);
                        let etag = row.try_get::<Option<String>, _>(1);
                        match (id, etag) {
                            (Ok(id), Ok(etag)) => {
                                (self.remote_id(id)?, Etag::new(etag.unwrap_or_default()))
                            }
                            _ => return Err("a row's id or etag is not readable as text".into()),
                        }
                    }
                    None => {
                        let (id, etag, _) = self.read_row(row)?;
                        (id, etag)
                    }
                };
                Ok(ItemMeta {
                    id,
                    etag,
                    modified_ms: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(ConnectorError::Invalid)?;
        Ok(Snapshot { items })
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        let ready = self.ready().await?;
        let mut found = std::collections::HashMap::new();
        for chunk in ids.chunks(FETCH_CHUNK) {
            let mut q = sqlx::query(AssertSqlSafe(self.sql.select_in(chunk.len())));
            for id in chunk {
                q = q.bind(id.as_str().to_owned());
            }
            let rows = q
                .fetch_all(&ready.pool)
                .await
                .map_err(|e| db_error(&e, "reading rows"))?;
            // A row answers for the id it matched, which the caller gave as a readable one.
            found.extend(rows.iter().filter_map(|row| self.item(row)));
        }
        Ok(ids
            .iter()
            .map(|id| {
                let item = found.remove(id).unwrap_or(Err(ConnectorError::NotFound));
                (id.clone(), item)
            })
            .collect())
    }
}

#[async_trait]
impl Destination for SqlTable {
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        let cells = self.cells(contact)?;
        let ready = self.ready().await?;
        let id = RemoteId::parse(&uuid::Uuid::new_v4().to_string())?;
        let mut tx = self.begin(&ready.pool).await?;
        let mut q =
            sqlx::query(AssertSqlSafe(self.sql.insert(ready.etag))).bind(id.as_str().to_owned());
        for cell in cells {
            q = q.bind(cell);
        }
        if ready.etag == Some(EtagKind::Token) {
            q = q.bind(uuid::Uuid::new_v4().to_string());
        }
        q.execute(&mut *tx)
            .await
            .map_err(|e| db_error(&e, "adding a row"))?;
        let meta = self.written_meta(&mut tx, &id).await?;
        tx.commit()
            .await
            .map_err(|e| db_error(&e, "committing a new row"))?;
        Ok(meta)
    }

    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        let cells = self.cells(contact)?;
        let ready = self.ready().await?;
        let mut tx = self.begin(&ready.pool).await?;
        match self.locked_etag(&mut tx, id).await? {
            None => return Err(ConnectorError::NotFound),
            Some(current) if &current != expected => return Err(ConnectorError::Conflict),
            Some(_) => {}
        }
        let mut q =
            sqlx::query(AssertSqlSafe(self.sql.update(ready.etag))).bind(id.as_str().to_owned());
        for cell in cells {
            q = q.bind(cell);
        }
        if ready.etag == Some(EtagKind::Token) {
            q = q.bind(uuid::Uuid::new_v4().to_string());
        }
        q.execute(&mut *tx)
            .await
            .map_err(|e| db_error(&e, "updating a row"))?;
        let meta = self.written_meta(&mut tx, id).await?;
        tx.commit()
            .await
            .map_err(|e| db_error(&e, "committing an update"))?;
        Ok(meta)
    }

    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError> {
        let ready = self.ready().await?;
        let mut tx = self.begin(&ready.pool).await?;
        match self.locked_etag(&mut tx, id).await? {
            None => return Ok(()),
            Some(current) if &current != expected => return Err(ConnectorError::Conflict),
            Some(_) => {}
        }
        sqlx::query(AssertSqlSafe(self.sql.delete.clone()))
            .bind(id.as_str().to_owned())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(&e, "deleting a row"))?;
        tx.commit()
            .await
            .map_err(|e| db_error(&e, "committing a delete"))
    }
}

const FETCH_CHUNK: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// How the etag column moves when this connector writes a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EtagKind {
    /// A number: one more.
    Counter,
    /// A PostgreSQL timestamp: the current time, to the microsecond.
    PgClock,
    /// A SQLite date/time column: the current time, to the millisecond.
    SqliteClock,
    /// Anything else: a new random token.
    Token,
}

/// What the first connection learned.
#[derive(Debug)]
struct Ready {
    pool: AnyPool,
    etag: Option<EtagKind>,
}

/// A SQL identifier: letters, digits and `_`, not starting with a digit, at most 63 bytes
/// (PostgreSQL's limit). Always quoted when used, so keywords are fine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ident(String);

impl Ident {
    fn parse(s: &str, what: &str) -> Result<Self, ConnectorError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && !s.starts_with(|c: char| c.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ConnectorError::Config(format!(
                "{what} {s:?} is not a plain SQL name: use 1 to 63 letters, digits or '_', not starting with a digit"
            )))
        }
    }

    fn quoted(&self) -> String {
        // Validation leaves no `"` to escape; doubling them keeps quoting sound regardless.
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

/// `name` or `schema.name`.
#[derive(Debug, Clone)]
struct TableName {
    schema: Option<Ident>,
    name: Ident,
}

impl TableName {
    fn parse(s: &str) -> Result<Self, ConnectorError> {
        match s.split_once('.') {
            Some((schema, name)) => Ok(Self {
                schema: Some(Ident::parse(schema, "table schema")?),
                name: Ident::parse(name, "table")?,
            }),
            None => Ok(Self {
                schema: None,
                name: Ident::parse(s, "table")?,
            }),
        }
    }

    fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", schema.quoted(), self.name.quoted()),
            None => self.name.quoted(),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{}.{}", schema.0, self.name.0),
            None => f.write_str(&self.name.0),
        }
    }
}

/// The SQL text, built once from validated, quoted identifiers; values are parameters.
#[derive(Debug)]
struct Statements {
    table: String,
    id: String,
    etag: Option<String>,
    columns: Vec<String>,
    /// `id, [etag,] columns…`, each as text.
    select_columns: String,
    probe: String,
    list: String,
    select_one: String,
    select_one_locked: String,
    delete: String,
}

impl Statements {
    fn new(shape: &SqlShape, dialect: Dialect) -> Self {
        let table = shape.table.quoted();
        let id = shape.id.quoted();
        let etag = shape.etag.as_ref().map(Ident::quoted);
        let columns: Vec<String> = shape.columns.iter().map(Ident::quoted).collect();
        let text = |c: &String| format!("CAST({c} AS TEXT)");
        let mut select: Vec<String> = vec![text(&id)];
        select.extend(etag.iter().map(text));
        select.extend(columns.iter().map(text));
        let select_columns = select.join(", ");
        let list = match &etag {
            Some(etag) => format!("SELECT {}, {} FROM {table}", text(&id), text(etag)),
            None => format!("SELECT {select_columns} FROM {table}"),
        };
        let select_one = format!("SELECT {select_columns} FROM {table} WHERE {id} = $1");
        let select_one_locked = match dialect {
            Dialect::Postgres => format!("{select_one} FOR UPDATE"),
            Dialect::Sqlite => select_one.clone(),
        };
        Self {
            probe: format!("SELECT {select_columns} FROM {table} WHERE 1 = 0"),
            delete: format!("DELETE FROM {table} WHERE {id} = $1"),
            list,
            select_one,
            select_one_locked,
            select_columns,
            table,
            id,
            etag,
            columns,
        }
    }

    fn select_in(&self, n: usize) -> String {
        let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        format!(
            "SELECT {} FROM {} WHERE {} IN ({})",
            self.select_columns,
            self.table,
            self.id,
            params.join(", ")
        )
    }

    /// The etag column's new value: an expression, or the next parameter for a token.
    fn etag_value(kind: EtagKind, column: &str, next_param: usize, insert: bool) -> String {
        match kind {
            EtagKind::Counter if insert => "1".into(),
            EtagKind::Counter => format!("COALESCE({column}, 0) + 1"),
            EtagKind::PgClock => "clock_timestamp()".into(),
            EtagKind::SqliteClock => "strftime('%Y-%m-%d %H:%M:%f', 'now')".into(),
            EtagKind::Token => format!("${next_param}"),
        }
    }

    /// Parameters: id, the mapped cells, then the etag token when the etag kind takes one.
    fn insert(&self, etag: Option<EtagKind>) -> String {
        let mut names = vec![self.id.clone()];
        names.extend(self.columns.iter().cloned());
        let mut values: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        if let (Some(column), Some(kind)) = (&self.etag, etag) {
            values.push(Self::etag_value(kind, column, names.len() + 1, true));
            names.push(column.clone());
        }
        format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.table,
            names.join(", "),
            values.join(", ")
        )
    }

    /// Parameters as for [`Statements::insert`].
    fn update(&self, etag: Option<EtagKind>) -> String {
        let mut sets: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 2))
            .collect();
        if let (Some(column), Some(kind)) = (&self.etag, etag) {
            let value = Self::etag_value(kind, column, self.columns.len() + 2, false);
            sets.push(format!("{column} = {value}"));
        }
        format!(
            "UPDATE {} SET {} WHERE {} = $1",
            self.table,
            sets.join(", "),
            self.id
        )
    }
}

/// One mapping target as a layout column: the CSV mapping's own parser, one column at a time.
fn mapping_target(column: &str, target: &str) -> Result<Column, ConnectorError> {
    let mut columns = toml::Table::new();
    columns.insert(column.to_owned(), toml::Value::String(target.to_owned()));
    let mut file = toml::Table::new();
    file.insert("columns".into(), toml::Value::Table(columns));
    let text = toml::to_string(&file).map_err(|_| {
        ConnectorError::Config(format!("column {column:?}: the target is not usable"))
    })?;
    let layout =
        CsvLayout::from_mapping_toml(&text).map_err(|e| ConnectorError::Config(e.to_string()))?;
    layout
        .columns
        .into_iter()
        .next()
        .ok_or_else(|| ConnectorError::Config(format!("column {column:?}: no target")))
}

/// A SHA-256 of the mapped cells, each marked as NULL or length-prefixed so no two rows
/// collide by shifting text between columns.
fn hash_etag(cells: &[Option<String>]) -> Etag {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for cell in cells {
        match cell {
            None => ctx.update(&[0]),
            Some(text) => {
                ctx.update(&[1]);
                ctx.update(&(text.len() as u64).to_le_bytes());
                ctx.update(text.as_bytes());
            }
        }
    }
    let digest = ctx.finish();
    Etag::new(hex::encode(digest.as_ref()))
}

const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A row's cells as a contact, through the CSV reader (so placement matches CSV mappings);
/// `None` when the cells hold nothing.
fn cells_to_contact(layout: &CsvLayout, cells: &[Option<String>]) -> Option<Contact> {
    let mut csv = String::new();
    let quote = |out: &mut String, s: &str| {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    };
    for (i, column) in layout.columns.iter().enumerate() {
        if i > 0 {
            csv.push(',');
        }
        quote(&mut csv, &column.header);
    }
    csv.push('\n');
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            csv.push(',');
        }
        // The reader drops the `'` of a `'=…` cell as a CSV formula guard, and has no way to
        // keep it: such a value reads without its leading `'`.
        quote(&mut csv, cell.as_deref().unwrap_or_default());
    }
    csv.push('\n');
    let mut reader = CsvReader::new(csv.as_bytes(), layout.clone()).ok()?;
    match reader.next_contact() {
        Some(Ok((_, contact))) => Some(contact),
        _ => None,
    }
}

/// A contact as a row's cells (`None` for empty), through the CSV writer.
fn contact_to_cells(
    layout: &CsvLayout,
    contact: &Contact,
) -> Result<Vec<Option<String>>, ConnectorError> {
    let unusable = || ConnectorError::Invalid("the contact cannot be laid out in columns".into());
    let mut w = CsvWriter::new(Vec::new(), layout.clone()).map_err(|_| unusable())?;
    w.write(contact).map_err(|_| unusable())?;
    let bytes = w.finish().map_err(|_| unusable())?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(layout.delimiter)
        .from_reader(bytes.as_slice());
    let record = reader
        .records()
        .next()
        .ok_or_else(unusable)?
        .map_err(|_| unusable())?;
    Ok(record
        .iter()
        .map(|cell| {
            // Undo the writer's formula guard (`=x` → `'=x`, `'=x` → `''=x`): a database cell
            // is not run as a formula.
            let cell = match cell.strip_prefix('\'') {
                Some(rest)
                    if rest.starts_with(FORMULA_STARTS)
                        || rest
                            .strip_prefix('\'')
                            .is_some_and(|r| r.starts_with(FORMULA_STARTS)) =>
                {
                    rest
                }
                _ => cell,
            };
            (!cell.is_empty()).then(|| cell.to_owned())
        })
        .collect())
}

/// A database error as a connector error: what was being done and a kind or SQLSTATE code,
/// never the driver's message (it can quote the URL or a row's values).
fn db_error(e: &sqlx::Error, doing: &str) -> ConnectorError {
    match e {
        sqlx::Error::Database(d) => ConnectorError::Unavailable(format!(
            "{doing}: the database refused the statement (code {})",
            d.code().as_deref().unwrap_or("unknown")
        )),
        sqlx::Error::Configuration(_) => {
            ConnectorError::Config(format!("{doing}: the database URL is not usable"))
        }
        sqlx::Error::Io(io) => ConnectorError::Unavailable(format!(
            "{doing}: the database cannot be reached ({})",
            io.kind()
        )),
        sqlx::Error::Tls(_) => {
            ConnectorError::Unavailable(format!("{doing}: TLS with the database failed"))
        }
        sqlx::Error::PoolTimedOut => ConnectorError::Unavailable(format!(
            "{doing}: the database cannot be reached or did not answer in time"
        )),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            ConnectorError::Invalid(format!("{doing}: a value is not readable as text"))
        }
        _ => ConnectorError::Unavailable(format!("{doing}: the database failed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_content() {
        let url = DatabaseUrl::parse("postgres://u:hunter2@db.example.org/x").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let err = DatabaseUrl::parse("mysql://u:hunter2@db/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn names_are_checked_and_quoted() {
        assert!(TableName::parse("people; DROP TABLE x").is_err());
        assert!(TableName::parse("a.b.c").is_err());
        assert!(Ident::parse("1abc", "column").is_err());
        assert_eq!(
            TableName::parse("crm.people").unwrap().quoted(),
            "\"crm\".\"people\""
        );
        let cols = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(SqlShape::parse("t", "id", None, &cols(&["FN=id"])).is_err());
        assert!(SqlShape::parse("t", "id", None, &cols(&["FN=a", "EMAIL=a"])).is_err());
        assert!(SqlShape::parse("t", "id", None, &cols(&["FN"])).is_err());
        assert!(SqlShape::parse("t", "id", None, &cols(&["NOPE:x=a"])).is_err());
        assert!(SqlShape::parse("t", "id", Some("id"), &cols(&["FN=a"])).is_err());
        assert!(SqlShape::parse("t", "id", None, &[]).is_err());
        let shape = SqlShape::parse(
            "t",
            "id",
            Some("v"),
            &cols(&["N:given=g", "TEL;TYPE=cell=m"]),
        )
        .unwrap();
        assert_eq!(shape.layout.columns[1].property, "TEL");
    }

    #[test]
    fn cells_round_trip_through_the_csv_placement() {
        let cols: Vec<String> = ["FN=f", "N:given=g", "N:family=s", "TEL=t", "NOTE=n"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let shape = SqlShape::parse("t", "id", None, &cols).unwrap();
        let cells = vec![
            Some("Ada Lovelace".to_owned()),
            Some("Ada".to_owned()),
            Some("Lovelace".to_owned()),
            Some("+44 20 7946 0001".to_owned()),
            Some("=not a formula, \"quoted\"\nline".to_owned()),
        ];
        let contact = cells_to_contact(&shape.layout, &cells).unwrap();
        assert_eq!(contact_to_cells(&shape.layout, &contact).unwrap(), cells);
        assert!(cells_to_contact(&shape.layout, &[None, None, None, None, None]).is_none());
    }
}
