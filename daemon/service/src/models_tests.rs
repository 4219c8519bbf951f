//! The name a package named by path goes by.

use std::path::{Path, PathBuf};

use super::Registry;

fn package(at: &Path, manifest_name: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(at).expect("mkdir");
    let manifest = match manifest_name {
        Some(name) => serde_json::json!({ "name": name }),
        None => serde_json::json!({}),
    };
    std::fs::write(at.join("manifest.json"), manifest.to_string()).expect("manifest");
    at.to_path_buf()
}

fn name(registry: &Registry, path: &Path) -> String {
    let (name, dir) = registry
        .resolve(&path.to_string_lossy(), None)
        .expect("resolve");
    assert_eq!(dir, path);
    name
}

#[test]
fn a_package_named_by_path_goes_by_its_manifest_name_where_unambiguous() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs = tmp.path().join("models");
    std::fs::create_dir(&dirs).expect("mkdir");
    let registry = Registry::new(vec![dirs.clone()]);

    let elsewhere = package(&tmp.path().join("exports/out-1"), Some("moe-mini"));
    assert_eq!(name(&registry, &elsewhere), "moe-mini");

    // A package of that name in the model directories: the name would be ambiguous.
    package(&dirs.join("moe-mini"), Some("moe-mini"));
    assert_eq!(name(&registry, &elsewhere), "out-1");

    // A package inside a model directory keeps the name `models list` shows for it.
    let listed = package(&dirs.join("folder"), Some("other-name"));
    assert_eq!(name(&registry, &listed), "folder");

    // No name, or one that is no model name: the folder's.
    let unnamed = package(&tmp.path().join("exports/unnamed"), None);
    assert_eq!(name(&registry, &unnamed), "unnamed");
    let slashed = package(&tmp.path().join("exports/slashed"), Some("../../etc"));
    assert_eq!(name(&registry, &slashed), "slashed");
}
