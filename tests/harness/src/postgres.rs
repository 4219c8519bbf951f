//! A throwaway PostgreSQL cluster for tests: Debian's server binaries (`/usr/lib/postgresql/*/bin`,
//! or `$MOE_PG_BIN`), a data directory in a temporary directory, listening only on a Unix socket
//! there, password (SCRAM) authentication. PostgreSQL refuses to run as root, so when the tests
//! run as root (CI does) the cluster runs as `nobody`.
//!
//! Without the binaries a test is skipped with a message, unless `MOE_REQUIRE_POSTGRES` is set
//! (tests/run.sh sets it, so CI never skips silently).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The superuser's name and password in every test cluster.
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "superuser-test-password";
const PORT: u16 = 5432;
const NOBODY: u32 = 65534;

pub struct PgCluster {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
    /// The directory of the server's socket (libpq's `host`).
    pub socket_dir: PathBuf,
    log: PathBuf,
    running: bool,
}

/// The newest `/usr/lib/postgresql/N/bin` with `initdb`, or `$MOE_PG_BIN`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MOE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
        .unwrap_or_else(|e| panic!("chown {} to nobody: {e}", path.display()));
}

fn check(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgCluster {
    /// Creates and starts a cluster; `None` (after saying why) when PostgreSQL is not installed
    /// and `MOE_REQUIRE_POSTGRES` is unset.
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            assert!(
                std::env::var_os("MOE_REQUIRE_POSTGRES").is_none(),
                "MOE_REQUIRE_POSTGRES is set but no PostgreSQL server is installed \
                 (/usr/lib/postgresql/*/bin/initdb); run tests/setup.sh (apt-get install postgresql)"
            );
            eprintln!(
                "SKIPPED: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin); \
                 apt-get install postgresql, or set MOE_PG_BIN"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        crate::set_mode(dir.path(), 0o755);
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        let pwfile = dir.path().join("pwfile");
        let log = dir.path().join("server.log");
        std::fs::create_dir(&data).expect("mkdir data");
        std::fs::create_dir(&socket_dir).expect("mkdir socket");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("write pwfile");
        std::fs::write(&log, "").expect("create log");
        crate::set_mode(&data, 0o700);
        if crate::is_root() {
            for p in [&data, &socket_dir, &pwfile, &log] {
                chown_nobody(p);
            }
        }
        let mut cluster = PgCluster {
            _dir: dir,
            bin,
            data,
            socket_dir,
            log,
            running: false,
        };
        let initdb = cluster.bin.join("initdb");
        let out = cluster
            .as_owner(&initdb)
            .arg("-D")
            .arg(&cluster.data)
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "--encoding=UTF8"])
            .args(["--locale=C", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        check("initdb", out);
        cluster.start_server();
        Some(cluster)
    }

    /// A command run as the cluster's owner (`nobody` when the tests run as root).
    fn as_owner(&self, program: &Path) -> Command {
        if crate::is_root() {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
            ])
            .arg(program);
            c.env("HOME", "/nonexistent").env("LC_ALL", "C");
            c.current_dir(&self.socket_dir);
            c
        } else {
            Command::new(program)
        }
    }

    fn start_server(&mut self) {
        let options = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c fsync=off -c full_page_writes=off",
            self.socket_dir.display()
        );
        let out = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl start");
        if !out.status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}{}\nserver log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    /// Stops the server at once (`-m immediate`): the source is down.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let out = self
            .as_owner(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        check("pg_ctl stop", out);
        self.running = false;
    }

    /// A libpq connection string for `user` to `dbname` over the socket.
    pub fn connection(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host={} port={PORT} dbname={dbname} user={user} password={password}",
            self.socket_dir.display()
        )
    }

    /// Runs `psql` as the superuser on `dbname` with `-f file` or `-c sql`; stops at the first
    /// error. Returns stdout (unaligned, tuples only).
    /// The server's main process, from `postmaster.pid` (its first line), as the server records it.
    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn psql(&self, dbname: &str, args: &[&str]) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", &self.socket_dir.display().to_string()])
            .args(["-p", &PORT.to_string(), "-U", SUPERUSER, "-d", dbname])
            .args(args)
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .output()
            .expect("run psql");
        let out = check(&format!("psql {args:?}"), out);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs the `NN-*.sql` files of `dir`, in name order, on `dbname`.
    pub fn load_dir(&self, dbname: &str, dir: &Path) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect();
        files.sort();
        for f in files {
            self.psql(dbname, &["-f", &f.display().to_string()]);
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .as_owner(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
