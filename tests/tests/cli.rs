//! The offline commands, as CI would run them before a merge: `validate` and `diff` exit codes.

use std::process::Command;

use tollgate_tests::{tollgate_bin, workspace_root};

fn run(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new(tollgate_bin())
        .args(args)
        .output()
        .expect("run tollgate");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn diff_exits_like_flux_diff_and_validate_like_a_linter() {
    let examples = workspace_root().join("examples");
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    let edge = std::fs::read_to_string(examples.join("edge.yaml")).unwrap();
    std::fs::write(
        new.join("edge.yaml"),
        edge.replace("203.0.113.0/24", "203.0.113.0/25"),
    )
    .unwrap();

    let (code, out) = run(&["diff".as_ref(), examples.as_os_str(), examples.as_os_str()]);
    assert_eq!(code, 0, "no change: {out}");
    let (code, out) = run(&["diff".as_ref(), examples.as_os_str(), new.as_os_str()]);
    assert_eq!(code, 1, "a change: {out}");
    assert!(
        out.contains("~ L4Policy/edge rule block-scanners") && out.contains("203.0.113.0/25"),
        "{out}"
    );

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("edge.yaml"),
        edge.replace("203.0.113.0/24", "203.0.113.0/99"),
    )
    .unwrap();
    let (code, out) = run(&["diff".as_ref(), examples.as_os_str(), broken.as_os_str()]);
    assert_eq!(code, 2, "an invalid revision is an error: {out}");
    let (code, out) = run(&["validate".as_ref(), broken.as_os_str()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("edge.yaml")
            && out.contains("L4Policy/edge")
            && out.contains("spec.rules[0].from[0]"),
        "{out}"
    );
    let (code, _) = run(&["validate".as_ref(), examples.as_os_str()]);
    assert_eq!(code, 0);
    let (code, _) = run(&["validate".as_ref(), dir.path().join("missing").as_os_str()]);
    assert_eq!(code, 2, "an unreadable path");
}

#[test]
fn every_bad_run_setting_is_reported_at_once_and_nothing_starts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        "interval: fast\nadmin: nowhere\nattach-mode: sideways\nintreface: [eth0]\n",
    )
    .unwrap();
    let (code, out) = run(&[
        "run".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--interval".as_ref(),
        "3d".as_ref(),
        "--interface".as_ref(),
        "tgnonexist0".as_ref(),
    ]);
    assert_eq!(code, 2, "{out}");
    let shown = config.display().to_string();
    for needle in [
        "5 bad setting(s)".to_owned(),
        "--interval: invalid value '3d'".to_owned(),
        format!("{shown}: interval: invalid value 'fast'"),
        format!("{shown}: admin: invalid value 'nowhere'"),
        format!("{shown}: attach-mode: invalid value 'sideways'"),
        format!("{shown}: intreface: unknown setting"),
    ] {
        assert!(out.contains(&needle), "missing {needle:?} in:\n{out}");
    }
}
