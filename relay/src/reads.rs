//! Reads on the relay's read connection (`App.read_db`): OFREP evaluations and the dashboard's
//! snapshot. At most `--ofrep-max-concurrent` run at once; one that outlives
//! `--query-timeout-seconds` is cancelled on the server and the connection is kept.

use tokio_postgres::error::DbError;
use tokio_postgres::types::ToSql;

use crate::App;

/// Why a read gave no answer.
#[derive(Debug)]
pub enum ReadError {
    /// The limit of reads at once is reached: ask again shortly (429).
    Busy,
    /// No connection to PostgreSQL now (503).
    Unavailable,
    /// The query outlived the timeout and was cancelled (503).
    TimedOut,
    /// PostgreSQL refused the statement: its SQLSTATE and message.
    Refused(Box<DbError>),
}

/// Runs `sql` (one row, one text column) on the read connection; `what` names it in logs.
pub async fn read_text(app: &App, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<String, ReadError> {
    let Ok(_permit) = app.ofrep.try_acquire() else { return Err(ReadError::Busy) };
    let Some(client) = app.read_db.client_soon().await else { return Err(ReadError::Unavailable) };
    match tokio::time::timeout(app.config.query_timeout(), client.query_one(sql, params)).await {
        Ok(Ok(row)) => row.try_get::<_, String>(0).map_err(|_| ReadError::Unavailable),
        Ok(Err(e)) => match e.as_db_error() {
            Some(db) => Err(ReadError::Refused(Box::new(db.clone()))),
            None => {
                app.read_db.report_failure(what, &e);
                Err(ReadError::Unavailable)
            }
        },
        Err(_) => {
            // Cancel the query rather than drop the connection: the next read needs it, and a
            // slow query (a lock, a long plan) is no sign that the connection is lost.
            let cancel = client.cancel_token();
            let what = what.to_owned();
            tokio::spawn(async move {
                if let Err(e) = cancel.cancel_query(tokio_postgres::NoTls).await {
                    tracing::warn!(error = %e, "cancelling a timed-out {what} failed");
                }
            });
            Err(ReadError::TimedOut)
        }
    }
}
