//! `sslmode` on both connections (control/snapshot and replication),
//! against a dedicated cluster with a certificate from a throwaway CA.

use std::path::{Path, PathBuf};
use std::process::Command;

use flashsync_core::{FeedStart, OriginId, Source, UpstreamRelation};
use flashsync_source_pg::testkit::{self, ClusterOptions};
use flashsync_source_pg::{ConnInfo, Host, PgSource, PgSourceConfig, SslMode};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and a server certificate for `localhost` signed by it, plus an
/// unrelated CA.
fn make_certs(dir: &Path) {
    for ca in ["ca", "other_ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=flashsync test {ca}"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

#[tokio::test]
async fn sslmode_is_honoured_on_both_connections() {
    if Command::new("openssl").arg("version").output().is_err() {
        testkit::skip("tls", "the openssl command is needed to make test certificates");
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    make_certs(certs.path());
    let read = |n: &str| std::fs::read(certs.path().join(n)).expect("cert file");
    let Some(cluster) = testkit::dedicated(
        "tls",
        ClusterOptions::default()
            .file("server.crt", read("server.crt"))
            .file("server.key", read("server.key"))
            .set("ssl", "on")
            .set("ssl_cert_file", "'server.crt'")
            .set("ssl_key_file", "'server.key'"),
    ) else {
        return;
    };
    let db = cluster.create_db("tls").await.expect("db");
    db.client().await.batch_execute("CREATE TABLE t (id int4 PRIMARY KEY)").await.expect("setup");
    let ca: PathBuf = certs.path().join("ca.crt");
    let with = |host: &str, mode: SslMode, root: Option<&Path>| {
        let mut info: ConnInfo = db.conninfo.clone();
        info.host = Host::Tcp(host.into());
        info.sslmode = mode;
        info.sslrootcert = root.map(Path::to_path_buf);
        info
    };
    let rel = UpstreamRelation::new("public", "t").expect("rel");
    let mut n = 0;
    let mut source = |info: ConnInfo| {
        n += 1;
        let origin = OriginId::new(format!("postgres:tls{n}")).expect("origin");
        PgSource::new(PgSourceConfig::new(&origin, info)).expect("source")
    };

    // Accepted: every connection of the source, including replication,
    // is encrypted (checked in pg_stat_ssl below).
    for info in [
        with("localhost", SslMode::VerifyFull, Some(&ca)),
        with("127.0.0.1", SslMode::VerifyCa, Some(&ca)),
        with("127.0.0.1", SslMode::Require, None),
    ] {
        let mode = info.sslmode;
        let src = source(info);
        src.prepare(&rel, true).await.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let sub = src.subscribe(None).await.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(matches!(sub.report.start, FeedStart::Created { .. }));
        let plain: i64 = db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND NOT s.ssl
                   AND a.application_name = 'flashsync'",
                &[],
            )
            .await
            .expect("pg_stat_ssl")
            .get(0);
        assert_eq!(plain, 0, "{mode:?}: some flashsync connection is not encrypted");
        drop(sub);
        src.drop_feed().await.expect("drop feed");
    }

    // Refused: wrong host name for verify-full, untrusted CA.
    let wrong_name = source(with("127.0.0.1", SslMode::VerifyFull, Some(&ca)));
    let e = wrong_name.prepare(&rel, false).await.expect_err("name mismatch");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let other = certs.path().join("other_ca.crt");
    let untrusted = source(with("localhost", SslMode::VerifyCa, Some(&other)));
    let e = untrusted.prepare(&rel, false).await.expect_err("untrusted CA");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let e = untrusted.subscribe(None).await.expect_err("untrusted CA on replication too");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}
