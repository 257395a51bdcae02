//! `fermyon:spin/mysql@2.0.0` on mysql_async, matching Spin's behaviour: the address must be in
//! `allowed_outbound_hosts` (else `connection-failed`), `ssl-mode` other than DISABLED turns TLS
//! on, one connection per `open`, and Spin's type mapping: integers, floats, strings and binary
//! come back; DECIMAL, DATE, DATETIME, TIMESTAMP, TIME, YEAR, JSON and BIT fail the whole query
//! with `value-conversion-failed` (select them as `UNIX_TIMESTAMP(col)` or `CAST(col AS CHAR)`).

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::{FromValue, Queryable as _};
use mysql_async::{Opts, OptsBuilder, SslOpts};
use tokio::sync::Mutex;
use wasmtime::component::Resource;

use crate::bindings::mysql::{Host, HostConnection};
use crate::bindings::rdbms_types::{Column, DbDataType, DbValue, Error, ParameterValue, RowSet};
use crate::runtime::InstanceState;

/// Largest result set a query may return, as in Spin.
const MAX_RESULT_BYTES: usize = 128 * 1024 * 1024;
/// Bound on opening a connection; Spin relies on the OS (minutes for a black-holed host).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One open connection: the `connection` resource of the guest.
pub struct MysqlConnection {
    conn: Arc<Mutex<mysql_async::Conn>>,
}

impl Host for InstanceState {}
impl crate::bindings::rdbms_types::Host for InstanceState {}

impl HostConnection for InstanceState {
    async fn open(&mut self, address: String) -> wasmtime::Result<Result<Resource<MysqlConnection>, Error>> {
        let redacted = redact_url(&address);
        if !self.component.allowed_hosts.allows_url(&address) || !address.starts_with("mysql://") {
            tracing::warn!(component = %self.component.id, address = %redacted, "mysql connection denied: not in allowed_outbound_hosts");
            return Ok(Err(Error::ConnectionFailed(format!("address {redacted} is not permitted"))));
        }
        let opts = match build_opts(&address) {
            Ok(opts) => opts,
            Err(err) => return Ok(Err(Error::ConnectionFailed(format!("{err:?}")))),
        };
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(err)) => {
                tracing::warn!(component = %self.component.id, address = %redacted, error = %err, "mysql connection failed");
                return Ok(Err(Error::ConnectionFailed(format!("{err:?}"))));
            }
            Err(_) => {
                tracing::warn!(component = %self.component.id, address = %redacted, "mysql connection timed out");
                return Ok(Err(Error::ConnectionFailed(format!("connecting to {redacted} timed out"))));
            }
        };
        let resource = self.table.push(MysqlConnection { conn: Arc::new(Mutex::new(conn)) })?;
        Ok(Ok(resource))
    }

    async fn query(
        &mut self,
        connection: Resource<MysqlConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let conn = self.table.get(&connection)?.conn.clone();
        let mut conn = conn.lock().await;
        Ok(run_query(&mut conn, statement, params).await)
    }

    async fn execute(
        &mut self,
        connection: Resource<MysqlConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let conn = self.table.get(&connection)?.conn.clone();
        let mut conn = conn.lock().await;
        let params = mysql_async::Params::Positional(params.into_iter().map(to_mysql_value).collect());
        Ok(conn
            .exec_drop(statement, params)
            .await
            .map_err(|e| Error::QueryFailed(format!("{e:?}"))))
    }

    async fn drop(&mut self, connection: Resource<MysqlConnection>) -> wasmtime::Result<()> {
        let connection = self.table.delete(connection)?;
        // Close politely in the background; the guest is not kept waiting.
        if let Ok(conn) = Arc::try_unwrap(connection.conn) {
            tokio::spawn(async move {
                let _ = conn.into_inner().disconnect().await;
            });
        }
        Ok(())
    }
}

async fn run_query(conn: &mut mysql_async::Conn, statement: String, params: Vec<ParameterValue>) -> Result<RowSet, Error> {
    let params = mysql_async::Params::Positional(params.into_iter().map(to_mysql_value).collect());
    let mut result = conn
        .exec_iter(statement, params)
        .await
        .map_err(|e| Error::QueryFailed(format!("{e:?}")))?;
    let columns: Vec<Column> = result
        .columns()
        .map(|columns| columns.iter().map(convert_column).collect())
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    if let Some(mut stream) = result.stream::<mysql_async::Row>().await.map_err(|e| Error::Other(e.to_string()))? {
        while let Some(row) = stream.try_next().await.map_err(|e| Error::Other(e.to_string()))? {
            let row = convert_row(row, &columns)?;
            bytes += row.iter().map(value_size).sum::<usize>();
            if bytes > MAX_RESULT_BYTES {
                return Err(Error::Other(format!("query result exceeds limit of {MAX_RESULT_BYTES} bytes")));
            }
            rows.push(row);
        }
    }
    Ok(RowSet { columns, rows })
}

/// Spin's handling of `ssl-mode`/`sslmode`: removed from the URL, and TLS with default
/// verification unless it says DISABLED.
fn build_opts(address: &str) -> anyhow::Result<Opts> {
    let url = url::Url::parse(address)?;
    let is_ssl_param = |key: &str| key.eq_ignore_ascii_case("ssl-mode") || key.eq_ignore_ascii_case("sslmode");
    let use_ssl = url
        .query_pairs()
        .any(|(k, v)| is_ssl_param(&k) && !v.eq_ignore_ascii_case("disabled"));
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !is_ssl_param(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut cleaned = url.clone();
    cleaned.set_query(None);
    if !kept.is_empty() {
        cleaned.query_pairs_mut().extend_pairs(kept);
    }
    let opts = Opts::from_url(cleaned.as_str())?;
    Ok(OptsBuilder::from_opts(opts)
        .ssl_opts(use_ssl.then(SslOpts::default))
        .into())
}

/// The URL without its password, for logs and guest-visible messages.
pub fn redact_url(address: &str) -> String {
    match url::Url::parse(address) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable address>".to_string(),
    }
}

fn to_mysql_value(value: ParameterValue) -> mysql_async::Value {
    match value {
        ParameterValue::Boolean(v) => v.into(),
        ParameterValue::Int8(v) => v.into(),
        ParameterValue::Int16(v) => v.into(),
        ParameterValue::Int32(v) => v.into(),
        ParameterValue::Int64(v) => v.into(),
        ParameterValue::Uint8(v) => v.into(),
        ParameterValue::Uint16(v) => v.into(),
        ParameterValue::Uint32(v) => v.into(),
        ParameterValue::Uint64(v) => v.into(),
        ParameterValue::Floating32(v) => v.into(),
        ParameterValue::Floating64(v) => v.into(),
        ParameterValue::Str(v) => v.into(),
        ParameterValue::Binary(v) => v.into(),
        ParameterValue::DbNull => mysql_async::Value::NULL,
    }
}

fn convert_column(column: &mysql_async::Column) -> Column {
    Column { name: column.name_str().into_owned(), data_type: data_type(column) }
}

/// Spin's mapping from MySQL column metadata to `db-data-type`.
fn data_type(column: &mysql_async::Column) -> DbDataType {
    let signed = !column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    let binary = column.flags().contains(ColumnFlags::BINARY_FLAG);
    match column.column_type() {
        ColumnType::MYSQL_TYPE_DOUBLE => DbDataType::Floating64,
        ColumnType::MYSQL_TYPE_FLOAT => DbDataType::Floating32,
        ColumnType::MYSQL_TYPE_TINY => if signed { DbDataType::Int8 } else { DbDataType::Uint8 },
        ColumnType::MYSQL_TYPE_SHORT => if signed { DbDataType::Int16 } else { DbDataType::Uint16 },
        ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG => {
            if signed { DbDataType::Int32 } else { DbDataType::Uint32 }
        }
        ColumnType::MYSQL_TYPE_LONGLONG => if signed { DbDataType::Int64 } else { DbDataType::Uint64 },
        // TEXT is a BLOB without the binary flag; MEDIUM/LONG blobs (and texts) are always binary.
        ColumnType::MYSQL_TYPE_BLOB => if binary { DbDataType::Binary } else { DbDataType::Str },
        ColumnType::MYSQL_TYPE_MEDIUM_BLOB | ColumnType::MYSQL_TYPE_LONG_BLOB => DbDataType::Binary,
        ColumnType::MYSQL_TYPE_STRING | ColumnType::MYSQL_TYPE_VAR_STRING => {
            if binary { DbDataType::Binary } else { DbDataType::Str }
        }
        _ => DbDataType::Other,
    }
}

fn convert_row(mut row: mysql_async::Row, columns: &[Column]) -> Result<Vec<DbValue>, Error> {
    (0..row.len())
        .map(|index| match (row.take::<mysql_async::Value, _>(index), columns.get(index)) {
            (None, _) | (Some(mysql_async::Value::NULL), _) => Ok(DbValue::DbNull),
            (_, None) => Err(Error::Other(format!("Can't get column at index {index}"))),
            (Some(value), Some(column)) => convert_value(value, column),
        })
        .collect()
}

fn convert_value(value: mysql_async::Value, column: &Column) -> Result<DbValue, Error> {
    fn to<T: FromValue>(value: mysql_async::Value) -> Result<T, Error> {
        mysql_async::from_value_opt::<T>(value).map_err(|e| Error::ValueConversionFailed(e.to_string()))
    }
    Ok(match column.data_type {
        DbDataType::Binary => DbValue::Binary(to(value)?),
        DbDataType::Boolean => DbValue::Boolean(to(value)?),
        DbDataType::Floating32 => DbValue::Floating32(to(value)?),
        DbDataType::Floating64 => DbValue::Floating64(to(value)?),
        DbDataType::Int8 => DbValue::Int8(to(value)?),
        DbDataType::Int16 => DbValue::Int16(to(value)?),
        DbDataType::Int32 => DbValue::Int32(to(value)?),
        DbDataType::Int64 => DbValue::Int64(to(value)?),
        DbDataType::Uint8 => DbValue::Uint8(to(value)?),
        DbDataType::Uint16 => DbValue::Uint16(to(value)?),
        DbDataType::Uint32 => DbValue::Uint32(to(value)?),
        DbDataType::Uint64 => DbValue::Uint64(to(value)?),
        DbDataType::Str => DbValue::Str(to(value)?),
        DbDataType::Other => {
            return Err(Error::ValueConversionFailed(format!(
                "Cannot convert value {value:?} in column {} data type {:?}",
                column.name, column.data_type
            )));
        }
    })
}

fn value_size(value: &DbValue) -> usize {
    std::mem::size_of::<DbValue>()
        + match value {
            DbValue::Str(s) => s.len(),
            DbValue::Binary(b) => b.len(),
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_mode_is_interpreted_like_spin() {
        assert!(build_opts("mysql://u:p@127.0.0.1/db").unwrap().ssl_opts().is_none());
        assert!(build_opts("mysql://u:p@127.0.0.1/db?ssl-mode=DISABLED").unwrap().ssl_opts().is_none());
        assert!(build_opts("mysql://u:p@127.0.0.1/db?sslMode=VERIFY_CA").unwrap().ssl_opts().is_some());
        assert!(build_opts("mysql://u:p@127.0.0.1/db?ssl-mode=REQUIRED").unwrap().ssl_opts().is_some());
    }

    #[test]
    fn passwords_are_redacted() {
        let redacted = redact_url("mysql://auth:s3cret@127.0.0.1:3316/auth");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("auth:***@127.0.0.1:3316"), "{redacted}");
    }
}
