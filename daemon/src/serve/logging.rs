//! Logging: the journal with structured fields when stderr is connected to it, plain stderr
//! lines with `key=value` fields otherwise.

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLog;

struct KvLine(String);

impl<'kvs> log::kv::VisitSource<'kvs> for KvLine {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0.push_str(&format!(" {key}={value}"));
        Ok(())
    }
}

impl Log for StderrLog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let mut fields = KvLine(String::new());
        // A visitor that only formats cannot fail; a failure would only drop the fields.
        let _ = record.key_values().visit(&mut fields);
        eprintln!("moed[{}]: {}{}", record.level(), record.args(), fields.0);
    }

    fn flush(&self) {}
}

static STDERR_LOG: StderrLog = StderrLog;

/// Installs the logger once; later calls only change the level (SIGHUP).
pub fn init(level: &str) {
    let filter = level.parse::<LevelFilter>().unwrap_or(LevelFilter::Info);
    let installed = if systemd_journal_logger::connected_to_journal() {
        match systemd_journal_logger::JournalLog::new() {
            Ok(journal) => journal
                .with_syslog_identifier("moed".to_string())
                .install()
                .is_ok(),
            Err(_) => log::set_logger(&STDERR_LOG).is_ok(),
        }
    } else {
        log::set_logger(&STDERR_LOG).is_ok()
    };
    let _ = installed;
    log::set_max_level(filter);
}
