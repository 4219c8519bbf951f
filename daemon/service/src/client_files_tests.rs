use std::os::unix::fs::PermissionsExt;

use super::*;

/// A user that owns nothing the tests create (unless the tests run as `nobody` itself).
fn stranger() -> Identity {
    let me = nix::unistd::geteuid().as_raw();
    let uid = if me == 65534 { 65533 } else { 65534 };
    Identity {
        uid,
        gids: vec![uid],
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `open/readable.txt` (0644 in a 0755 directory), `closed/secret.txt` (0644 in a 0700
/// directory), and links to both from `open/`.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().expect("tempdir");
    chmod(t.path(), 0o755);
    let open = t.path().join("open");
    let closed = t.path().join("closed");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::write(open.join("readable.txt"), "fine").expect("write");
    std::fs::write(closed.join("secret.txt"), "secret").expect("write");
    chmod(&open, 0o755);
    chmod(&open.join("readable.txt"), 0o644);
    chmod(&closed.join("secret.txt"), 0o644);
    chmod(&closed, 0o700);
    std::os::unix::fs::symlink(closed.join("secret.txt"), open.join("to-secret")).expect("ln");
    std::os::unix::fs::symlink("../open/readable.txt", open.join("to-readable")).expect("ln");
    t
}

#[test]
fn a_readable_file_opens_through_relative_links_too() {
    let t = tree();
    let id = stranger();
    for name in [
        "open/readable.txt",
        "open/to-readable",
        "open/../open/readable.txt",
    ] {
        let file = open_file_as(&id, &t.path().join(name)).expect(name);
        assert_eq!(read_bounded(file, 100).expect("read"), b"fine", "{name}");
    }
}

#[test]
fn hidden_files_and_missing_files_give_the_same_answer() {
    let t = tree();
    let id = stranger();
    let answers: Vec<String> = [
        "closed/secret.txt",
        "closed/missing.txt",
        "open/to-secret",
        "open/missing.txt",
        "no-such-dir/x",
    ]
    .iter()
    .map(|n| {
        open_file_as(&id, &t.path().join(n))
            .expect_err(n)
            .to_string()
    })
    .collect();
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert!(!answers[0].contains("secret"), "{}", answers[0]);
}

#[test]
fn a_file_without_read_permission_for_the_caller_is_refused() {
    let t = tree();
    let id = stranger();
    let path = t.path().join("open/readable.txt");
    chmod(&path, 0o600);
    assert!(open_file_as(&id, &path).is_err());
    // Group permission counts when the caller is in the file's group.
    chmod(&path, 0o640);
    let gid = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.gid()
    });
    let member = Identity {
        gids: vec![gid.expect("gid")],
        ..id
    };
    assert!(open_file_as(&member, &path).is_ok());
}

#[test]
fn directories_list_only_where_the_caller_may_read_them() {
    let t = tree();
    let id = stranger();
    let mut names = list_dir_as(&id, &t.path().join("open")).expect("list");
    names.sort();
    assert_eq!(names, ["readable.txt", "to-readable", "to-secret"]);
    assert!(list_dir_as(&id, &t.path().join("closed")).is_err());
    assert!(list_dir_as(&id, &t.path().join("open/readable.txt")).is_err());
}

#[test]
fn relative_paths_and_link_loops_are_refused() {
    let t = tree();
    let id = stranger();
    assert!(open_file_as(&id, Path::new("open/readable.txt")).is_err());
    let a = t.path().join("open/a");
    std::os::unix::fs::symlink(t.path().join("open/b"), &a).expect("ln");
    std::os::unix::fs::symlink(&a, t.path().join("open/b")).expect("ln");
    assert!(open_file_as(&id, &a).is_err());
}

#[test]
fn reads_take_only_regular_files_within_the_size_limit() {
    let t = tree();
    let fifo = t.path().join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Neither opening nor reading waits for a writer.
    let file = open_file(&fifo).expect("open fifo");
    assert!(matches!(
        read_bounded(file, 100),
        Err(ReadError::NotRegular)
    ));
    assert!(open_file_as(&stranger(), &fifo).is_err());

    let big = t.path().join("big");
    let f = File::create(&big).expect("create");
    f.set_len(1 << 30).expect("sparse");
    let file = open_file(&big).expect("open");
    assert!(matches!(
        read_bounded(file, 1 << 20),
        Err(ReadError::TooLarge { size, max }) if size == 1 << 30 && max == 1 << 20
    ));
}
