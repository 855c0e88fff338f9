//! Integration harness: a throwaway PostgreSQL cluster of our own, a fresh database per test.
//!
//! The cluster runs as the `postgres` user when the tests run as root (initdb refuses root),
//! on its own port and unix-socket directory, with `pg_cron` and `pg_lifecycle` preloaded.
//! A watchdog process stops it and deletes its directory once the test process is gone, so
//! nothing is left behind even when a test panics or the runner is killed.
#![allow(dead_code)]

pub mod data;

use postgres::{Client, NoTls};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The server's binaries: `PG_BIN` from the Makefile (PG=15|16|18), else Debian's 15.
pub fn pg_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()))
}

/// Whether the server under test has library `name` (`pg_cron`, `auto_explain`).
fn has_library(name: &str) -> bool {
    let out = Command::new(format!("{}/pg_config", pg_bin())).arg("--pkglibdir").output().expect("pg_config");
    Path::new(String::from_utf8_lossy(&out.stdout).trim()).join(format!("{name}.so")).exists()
}

/// Whether pg_cron is installed in the server under test (for 16 and 18 it is built from
/// ../shared/vendor when that is there). Tests that need it return early when it is not,
/// printing a `skipped:` line that the runner reports.
pub fn pg_cron_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| has_library("pg_cron"))
}

/// Returns true (and says so) when a plan assertion needs auto_explain and this server has
/// none (the PostgreSQL 16 wheel ships no contrib modules; 15 and 18 run them).
pub fn skip_plans_without_auto_explain(test: &str) -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    if *AVAILABLE.get_or_init(|| has_library("auto_explain")) {
        return false;
    }
    println!("skipped: {test}: its plan assertions: auto_explain is not installed for this PostgreSQL");
    true
}

/// Returns true (and says so) when the test needs pg_cron and this server has none.
pub fn skip_without_pg_cron(test: &str) -> bool {
    if pg_cron_available() {
        return false;
    }
    println!("skipped: {test}: pg_cron is not installed for this PostgreSQL (build it from ../shared/vendor)");
    true
}
const PG_USER: &str = "postgres";

/// Settings a test can ask for when it needs a cluster of its own.
#[derive(Clone)]
pub struct ClusterOptions {
    pub preload: &'static str,
    pub extra_conf: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        let preload = if pg_cron_available() { "pg_cron,pg_lifecycle" } else { "pg_lifecycle" };
        Self { preload, extra_conf: Vec::new() }
    }
}

pub struct Cluster {
    root: PathBuf,
    pub port: u16,
    /// Owned clusters are stopped on drop; the shared one is left to its watchdog.
    owned: bool,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

fn running_as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// A command that runs as the cluster's owner.
fn as_pg_user(program: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("sudo");
        c.args(["-n", "-u", PG_USER, "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{what} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A port that can be bound now, below the kernel's ephemeral range (as scripts/cluster.sh
/// picks one): between now and the postmaster's bind (initdb runs in between), a port in
/// that range can become the local end of one of the tests' client connections.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 21000)
        .unwrap_or(40000);
    let random = RandomState::new();
    (0..200u64)
        .map(|i| 20000 + (random.hash_one(i) % u64::from(low - 20000)) as u16)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("no free port")
}

impl Cluster {
    /// The cluster shared by every test in this test binary.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| Cluster::start_with(ClusterOptions::default(), false))
    }

    /// A cluster of the test's own (for restarts, crashes or other settings); stopped on drop.
    pub fn private(options: ClusterOptions) -> Cluster {
        Cluster::start_with(options, true)
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), on its own port, socket and
    /// directory; stopped and removed on drop.
    pub fn standby(&self) -> Cluster {
        let cluster = Cluster { root: Cluster::new_root(), port: free_port(), owned: true };
        cluster.spawn_watchdog();
        let mut backup = as_pg_user(&format!("{}/pg_basebackup", pg_bin()));
        backup.args(["-D", cluster.data_dir().to_str().unwrap(), "-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1"]);
        backup.args(["-p", &self.port.to_string(), "-U", PG_USER]);
        run(backup, "pg_basebackup");
        let mut mk = as_pg_user("mkdir");
        mk.arg(cluster.socket_dir());
        run(mk, "mkdir socket dir");
        cluster.append_conf(&[
            format!("port = {}", cluster.port),
            format!("unix_socket_directories = '{}'", cluster.socket_dir().display()),
            "hot_standby = on".into(),
        ]);
        cluster.start();
        cluster
    }

    /// A fresh directory for a cluster, which the cluster's owner can enter.
    fn new_root() -> PathBuf {
        let root = PathBuf::from(
            String::from_utf8(Command::new("mktemp").args(["-d", "/tmp/pg_lifecycle-it.XXXXXX"]).output().expect("mktemp").stdout)
                .expect("utf8")
                .trim(),
        );
        run(cmd("chmod", &["755", root.to_str().unwrap()]), "chmod");
        if running_as_root() {
            run(cmd("chown", &[PG_USER, root.to_str().unwrap()]), "chown");
        }
        root
    }

    /// Appends lines to the cluster's postgresql.auto.conf (read at the next start or reload).
    pub fn append_conf(&self, lines: &[String]) {
        let mut append = as_pg_user("sh");
        append.args(["-c", &format!("cat >> {}/postgresql.auto.conf", self.data_dir().display())]);
        append.stdin(Stdio::piped());
        let mut child = append.spawn().expect("append conf");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(format!("{}\n", lines.join("\n")).as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }

    /// Puts lines first in pg_hba.conf (the first matching rule wins) and reloads.
    pub fn prepend_hba(&self, lines: &[&str]) {
        let hba = self.data_dir().join("pg_hba.conf");
        let script = format!("{{ printf '%s\\n' \"$@\"; cat {0}; }} > {0}.new && mv {0}.new {0}", hba.display());
        let mut c = as_pg_user("sh");
        c.args(["-c", &script, "sh"]).args(lines);
        run(c, "prepend to pg_hba.conf");
        self.connect("postgres").batch_execute("SELECT pg_reload_conf()").unwrap();
    }

    fn start_with(options: ClusterOptions, owned: bool) -> Cluster {
        let cluster = Cluster { root: Cluster::new_root(), port: free_port(), owned };
        cluster.spawn_watchdog();
        cluster.initdb(&options);
        cluster.start();
        cluster
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn spawn_watchdog(&self) {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {sudo}{bin}/pg_ctl -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {root}",
            pid = std::process::id(),
            sudo = if running_as_root() { format!("sudo -n -u {PG_USER} -- ") } else { String::new() },
            bin = pg_bin(),
            data = self.data_dir().display(),
            root = self.root.display(),
        );
        // Left running on purpose: it outlives this process to clean up after a killed run.
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watchdog");
    }

    fn initdb(&self, options: &ClusterOptions) {
        let mut init = as_pg_user(&format!("{}/initdb", pg_bin()));
        init.args(["-D", self.data_dir().to_str().unwrap(), "-U", PG_USER, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"]);
        run(init, "initdb");
        let mut mk = as_pg_user("mkdir");
        mk.arg(self.socket_dir());
        run(mk, "mkdir socket dir");
        let mut conf = vec![
            format!("port = {}", self.port),
            "listen_addresses = '127.0.0.1'".into(),
            format!("unix_socket_directories = '{}'", self.socket_dir().display()),
            format!("shared_preload_libraries = '{}'", options.preload),
            "cron.database_name = 'postgres'".into(),
            // Jobs run in background workers: no libpq connection, so no auth setup needed.
            "cron.use_background_workers = on".into(),
            "fsync = off".into(),
            "max_connections = 100".into(),
            // Two-phase commit, as Citus uses it (tests/activity.rs).
            "max_prepared_transactions = 10".into(),
            "log_min_messages = log".into(),
        ];
        conf.extend(options.extra_conf.iter().cloned());
        let mut append = as_pg_user("sh");
        append.args(["-c", &format!("cat >> {}/postgresql.conf", self.data_dir().display())]);
        append.stdin(Stdio::piped());
        let mut child = append.spawn().expect("append conf");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(conf.join("\n").as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }

    pub fn start(&self) {
        let mut c = as_pg_user(&format!("{}/pg_ctl", pg_bin()));
        c.args(["-D", self.data_dir().to_str().unwrap(), "-l", self.log_path().to_str().unwrap(), "-w", "-t", "60", "start"]);
        run(c, "pg_ctl start");
    }

    /// Stops the server: "fast" for a clean shutdown, "immediate" to simulate a crash.
    pub fn stop(&self, mode: &str) {
        let mut c = as_pg_user(&format!("{}/pg_ctl", pg_bin()));
        c.args(["-D", self.data_dir().to_str().unwrap(), "-m", mode, "-w", "stop"]);
        run(c, "pg_ctl stop");
    }

    pub fn connect(&self, dbname: &str) -> Client {
        let started = Instant::now();
        loop {
            match Client::connect(&format!("host=127.0.0.1 port={} user={PG_USER} dbname={dbname}", self.port), NoTls) {
                Ok(c) => return c,
                Err(e) if started.elapsed() > Duration::from_secs(30) => panic!("connect {dbname}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A connection that also collects every notice, warning and log line sent to the client
    /// (as "SEVERITY: message").
    pub fn connect_collecting(&self, dbname: &str) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = notices.clone();
        let client = postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(PG_USER)
            .dbname(dbname)
            .notice_callback(move |n| sink.lock().unwrap().push(format!("{}: {}", n.severity(), n.message())))
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect {dbname}: {e}"));
        (client, notices)
    }

    /// A new, empty database with the extension installed as `CREATE EXTENSION ... CASCADE`.
    pub fn fresh_db(&self) -> TestDb<'_> {
        let db = self.empty_db();
        db.connect().batch_execute("CREATE EXTENSION pg_lifecycle CASCADE").expect("CREATE EXTENSION");
        db
    }

    /// A new database without the extension (for install/upgrade tests).
    pub fn empty_db(&self) -> TestDb<'_> {
        let name = format!("t{}_{}", std::process::id(), DB_COUNTER.fetch_add(1, Ordering::Relaxed));
        self.connect("postgres").batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
        TestDb { cluster: self, name }
    }

    pub fn server_log(&self) -> String {
        let out = as_pg_user("cat").arg(self.log_path()).output().expect("read log");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs an SQL file with psql against one database of this cluster.
    pub fn psql_file(&self, dbname: &str, file: &Path) {
        let mut c = Command::new(format!("{}/psql", pg_bin()));
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", PG_USER, "-d", dbname, "-f"]);
        c.arg(file);
        run(c, &format!("psql -f {}", file.display()));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            let mut c = as_pg_user(&format!("{}/pg_ctl", pg_bin()));
            c.args(["-D", self.data_dir().to_str().unwrap(), "-m", "immediate", "stop"]);
            let _ = c.output();
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// A database of one test; dropped (connections terminated) when the test ends.
pub struct TestDb<'a> {
    pub cluster: &'a Cluster,
    pub name: String,
}

impl TestDb<'_> {
    pub fn connect(&self) -> Client {
        self.cluster.connect(&self.name)
    }

    /// Loads one of the example schemas from `examples/`.
    pub fn load_example(&self, file: &str) {
        self.cluster.psql_file(&self.name, &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(file));
    }
}

impl Drop for TestDb<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.connect("postgres").batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// The SQLSTATE of a failed statement, or a panic naming what succeeded instead.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, postgres::Error>) -> (String, String, Option<String>) {
    let err = result.expect_err("expected an error");
    let db = err.as_db_error().unwrap_or_else(|| panic!("not a server error: {err}"));
    (db.code().code().to_string(), db.message().to_string(), db.hint().map(str::to_string))
}

/// The single bigint a query returns (a count, a sum): panics naming the query otherwise.
pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}
