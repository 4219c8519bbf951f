//! Where a configuration key got its value: the file and line, or the environment variable, so
//! that an error about a value points at the place to fix it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Configuration files are small; a larger one is not searched (its error names no line).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Where `key` (dotted, e.g. `service.max_concurrent`, an index such as `plugins.filters[1]`
/// allowed) was set: the environment variable when one sets it, else the last of `files` (read
/// in order, later ones win) that sets it.
pub fn locate(
    key: &str,
    files: &[PathBuf],
    env: Option<&HashMap<String, String>>,
) -> Option<String> {
    let parts: Vec<&str> = key
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    let var = format!(
        "MOED_{}",
        parts
            .iter()
            .map(|p| p.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    );
    let set = match env {
        Some(map) => map.contains_key(&var),
        None => std::env::var_os(&var).is_some(),
    };
    if set {
        return Some(format!("the environment variable {var}"));
    }
    files
        .iter()
        .rev()
        .find_map(|file| line_of(file, &parts).map(|line| format!("{}:{line}", file.display())))
}

/// The line of `file` on which the key `parts` is written, if it is.
fn line_of(file: &Path, parts: &[&str]) -> Option<usize> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)
        .ok()?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    let doc = DeTable::parse(&text).ok()?;
    let (last, path) = parts.split_last()?;
    let mut table: &DeTable = doc.get_ref();
    for part in path {
        match table.get(*part)?.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    let (key, _) = table.get_key_value(*last)?;
    let start = key.span().start;
    Some(text.get(..start)?.matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn the_last_file_that_sets_a_key_and_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = write(dir.path(), "moed.toml", "[service]\nmax_concurrent = 4\n");
        let drop_in = write(
            dir.path(),
            "10-x.toml",
            "# a drop-in\n[service]\n\nmax_concurrent = 0\n",
        );
        let files = [main.clone(), drop_in.clone()];
        let empty = HashMap::new();
        assert_eq!(
            locate("service.max_concurrent", &files, Some(&empty)),
            Some(format!("{}:4", drop_in.display()))
        );
        assert_eq!(
            locate("service.max_concurrent", &files[..1], Some(&empty)),
            Some(format!("{}:2", main.display()))
        );
        // Not written anywhere (a default), or a path through a value that is no table.
        assert_eq!(locate("service.queue_depth", &files, Some(&empty)), None);
        assert_eq!(
            locate("service.max_concurrent.x", &files, Some(&empty)),
            None
        );
    }

    #[test]
    fn nested_tables_dotted_keys_and_indices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "moed.toml",
            "[plugins]\nfilters = [\"/a.wasm\",\n  \"b\"]\n\n[knowledge.sources.docs]\nkind = \"x\"\n",
        );
        let empty = HashMap::new();
        let files = [file.clone()];
        assert_eq!(
            locate("plugins.filters[1]", &files, Some(&empty)),
            Some(format!("{}:2", file.display()))
        );
        assert_eq!(
            locate("knowledge.sources.docs.kind", &files, Some(&empty)),
            Some(format!("{}:6", file.display()))
        );
    }

    #[test]
    fn the_environment_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "moed.toml", "[service]\nmax_concurrent = 4\n");
        let env = HashMap::from([("MOED_SERVICE__MAX_CONCURRENT".to_string(), "0".to_string())]);
        assert_eq!(
            locate("service.max_concurrent", &[file], Some(&env)),
            Some("the environment variable MOED_SERVICE__MAX_CONCURRENT".into())
        );
    }

    #[test]
    fn unreadable_or_broken_files_give_no_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = write(dir.path(), "moed.toml", "[service\n");
        let missing = dir.path().join("none.toml");
        let empty = HashMap::new();
        assert_eq!(locate("service.x", &[broken, missing], Some(&empty)), None);
    }
}
