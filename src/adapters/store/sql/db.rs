//! The one interface the store's steps use to talk to a database: run a statement with
//! arguments, or fetch its rows. Implemented by sqlx's `AnyConnection` (PostgreSQL, and the
//! SQLite readers) and by rusqlite's `Connection` (SQLite's single writer, in-process).
//!
//! SQLite's writer talks to SQLite directly rather than through sqlx: sqlx runs each
//! SQLite connection on a thread of its own, so every statement was a round trip between
//! two threads, and each of those threads waited for a core behind the exchanges being
//! computed. The writer is the one stage every exchange passes through, so its latency is
//! the store's throughput.

use std::future::Future;

use sqlx::{AnyConnection, Row};

/// What a step's statement failed with.
pub(super) type DbError = Box<dyn std::error::Error + Send + Sync>;

/// One argument of a statement: `$1` is the first (`?` placeholders are taken in order).
/// A NULL keeps its column's type, which PostgreSQL checks.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
    NullInt,
    NullText,
}

impl<'a> From<i64> for Arg<'a> {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Arg::NullText, Arg::Text)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(value: &'a Option<String>) -> Self {
        value.as_deref().into()
    }
}

impl<'a> From<Option<i64>> for Arg<'a> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Arg::NullInt, Arg::Int)
    }
}

/// One value of a fetched row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cell {
    Int(i64),
    Text(String),
    Null,
}

impl Cell {
    pub(super) fn int(&self) -> Result<i64, DbError> {
        match self {
            Cell::Int(value) => Ok(*value),
            other => Err(format!("expected an integer, found {other:?}").into()),
        }
    }

    pub(super) fn text(self) -> Result<String, DbError> {
        match self {
            Cell::Text(value) => Ok(value),
            other => Err(format!("expected text, found {other:?}").into()),
        }
    }

    pub(super) fn opt_int(&self) -> Result<Option<i64>, DbError> {
        match self {
            Cell::Null => Ok(None),
            other => other.int().map(Some),
        }
    }

    pub(super) fn opt_text(self) -> Result<Option<String>, DbError> {
        match self {
            Cell::Null => Ok(None),
            other => other.text().map(Some),
        }
    }
}

/// `row`'s cells as an array of the `N` columns its query selected.
pub(super) fn columns<const N: usize>(row: Vec<Cell>) -> Result<[Cell; N], DbError> {
    let found = row.len();
    <[Cell; N]>::try_from(row)
        .map_err(|_| format!("expected a row of {N} columns, found {found}").into())
}

/// The text of each row's only column.
pub(super) fn texts(rows: Vec<Vec<Cell>>) -> Result<Vec<String>, DbError> {
    rows.into_iter()
        .map(|row| {
            let [text] = columns(row)?;
            text.text()
        })
        .collect()
}

/// A connection the store's steps run on, inside a transaction the caller opened.
pub(super) trait Db: Send {
    /// Runs `sql` (one statement) and returns the rows it changed.
    fn exec<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<u64, DbError>> + Send + 'a;

    /// Runs `sql` (one statement) and returns its rows, each with one cell per column.
    fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Vec<Vec<Cell>>, DbError>> + Send + 'a;
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

fn bind_any<'q>(sql: &'q str, args: &'q [Arg<'q>]) -> AnyQuery<'q> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Int(value) => query.bind(value),
        Arg::Text(value) => query.bind(value),
        Arg::NullInt => query.bind(None::<i64>),
        Arg::NullText => query.bind(None::<String>),
    })
}

fn any_cell(row: &sqlx::any::AnyRow, index: usize) -> Result<Cell, DbError> {
    // A column's type is known only per value: try integer, then text, then NULL.
    if let Ok(value) = row.try_get::<Option<i64>, _>(index) {
        return Ok(value.map_or(Cell::Null, Cell::Int));
    }
    let value: Option<String> = row.try_get(index)?;
    Ok(value.map_or(Cell::Null, Cell::Text))
}

impl Db for AnyConnection {
    async fn exec<'a>(&'a mut self, sql: &'a str, args: &'a [Arg<'a>]) -> Result<u64, DbError> {
        let done = bind_any(sql, args).execute(&mut *self).await?;
        Ok(done.rows_affected())
    }

    async fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> Result<Vec<Vec<Cell>>, DbError> {
        let rows = bind_any(sql, args).fetch_all(&mut *self).await?;
        rows.iter()
            .map(|row| (0..row.len()).map(|index| any_cell(row, index)).collect())
            .collect()
    }
}

/// Binds `args` to `statement`: by number when the statement names its parameters `$N`
/// (the text shared with PostgreSQL), else in order.
fn bind_native(
    statement: &mut rusqlite::CachedStatement<'_>,
    args: &[Arg<'_>],
) -> Result<(), DbError> {
    let count = statement.parameter_count();
    if count != args.len() {
        return Err(format!(
            "a statement with {count} parameters was given {} arguments",
            args.len()
        )
        .into());
    }
    for position in 1..=count {
        let index = match statement.parameter_name(position) {
            Some(name) => name
                .strip_prefix('$')
                .and_then(|number| number.parse::<usize>().ok())
                .filter(|number| (1..=count).contains(number))
                .ok_or_else(|| format!("a statement's parameter {name} is not $1..${count}"))?,
            None => position,
        };
        let value = match args[index - 1] {
            Arg::Int(value) => rusqlite::types::ToSqlOutput::from(value),
            Arg::Text(value) => rusqlite::types::ToSqlOutput::from(value),
            Arg::NullInt | Arg::NullText => {
                rusqlite::types::ToSqlOutput::from(rusqlite::types::Null)
            }
        };
        statement.raw_bind_parameter(position, value)?;
    }
    Ok(())
}

fn native_cell(value: rusqlite::types::ValueRef<'_>) -> Result<Cell, DbError> {
    use rusqlite::types::ValueRef;
    Ok(match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(value) => Cell::Int(value),
        ValueRef::Text(bytes) => Cell::Text(String::from_utf8(bytes.to_vec())?),
        ValueRef::Real(_) | ValueRef::Blob(_) => {
            return Err("the store read a column of an unexpected type".into());
        }
    })
}

/// `sql` prepared (or taken from the connection's cache) with `args` bound.
fn prepared<'c>(
    conn: &'c rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    let mut statement = conn.prepare_cached(sql)?;
    bind_native(&mut statement, args)?;
    Ok(statement)
}

impl Db for rusqlite::Connection {
    fn exec<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<u64, DbError>> + Send + 'a {
        // rusqlite is synchronous: the statement has run before the future is polled.
        let result =
            prepared(self, sql, args).and_then(|mut statement| Ok(statement.raw_execute()? as u64));
        std::future::ready(result)
    }

    fn fetch<'a>(
        &'a mut self,
        sql: &'a str,
        args: &'a [Arg<'a>],
    ) -> impl Future<Output = Result<Vec<Vec<Cell>>, DbError>> + Send + 'a {
        let result = (|| {
            let mut statement = prepared(self, sql, args)?;
            let columns = statement.column_count();
            let mut rows = statement.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(
                    (0..columns)
                        .map(|index| native_cell(row.get_ref(index)?))
                        .collect::<Result<Vec<_>, DbError>>()?,
                );
            }
            Ok(out)
        })();
        std::future::ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::{Arg, Cell, Db};

    /// The writer's SQL is shared with PostgreSQL and numbers its parameters `$N`, in any
    /// order; rusqlite must bind each by its number, not its position in the text.
    #[tokio::test]
    async fn numbered_parameters_bind_by_number_on_rusqlite() {
        let mut db = rusqlite::Connection::open_in_memory().expect("open");
        db.exec("CREATE TABLE t (a INTEGER, b TEXT, c TEXT)", &[])
            .await
            .expect("create");
        let changed = db
            .exec(
                "INSERT INTO t (b, a, c) VALUES ($2, $1, $3)",
                &[Arg::Int(7), Arg::Text("seven"), Arg::NullText],
            )
            .await
            .expect("insert");
        assert_eq!(changed, 1);
        db.exec(
            "INSERT INTO t (a, b, c) VALUES (?, ?, ?)",
            &[Arg::Int(8), Arg::Text("eight"), Arg::Text("x")],
        )
        .await
        .expect("insert in order");
        let rows = db
            .fetch("SELECT a, b, c FROM t ORDER BY a", &[])
            .await
            .expect("rows");
        assert_eq!(
            rows,
            vec![
                vec![Cell::Int(7), Cell::Text("seven".into()), Cell::Null],
                vec![
                    Cell::Int(8),
                    Cell::Text("eight".into()),
                    Cell::Text("x".into())
                ],
            ]
        );
        let wrong = db.exec("INSERT INTO t (a) VALUES ($1)", &[]).await;
        assert!(wrong.is_err(), "a missing argument is an error, not a NULL");
    }
}
