//! Keep local copies of upstream Postgres relations exact: tokio driver, facade and CLI
