//! `trapeze analyze`: the critical set and verdict it prints for the board's trap-everything configuration and
//! for delegated counters (issue 10's acceptance), and that its options reach the table.

use std::process::Command;

/// Runs `trapeze analyze ARGS` and returns its standard output.
fn analyze(args: &[&str]) -> String {
    let output =
        Command::new(env!("CARGO_BIN_EXE_trapeze")).arg("analyze").args(args).output().expect("run trapeze analyze");
    assert!(output.status.success(), "trapeze analyze {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// The critical set section: its header's count ("empty" or N) and the first word of each entry.
fn critical_set(report: &str) -> (String, Vec<String>) {
    let header = "Critical set (sensitive and not privileged): ";
    let start = report.find(header).unwrap_or_else(|| panic!("no critical set in:\n{report}"));
    let mut lines = report[start..].lines();
    let count = lines.next().unwrap()[header.len()..].to_string();
    let entries = lines
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .collect();
    (count, entries)
}

fn verdict(report: &str) -> &str {
    report.lines().find(|line| line.starts_with("Verdict: ")).unwrap_or_else(|| panic!("no verdict in:\n{report}"))
}

/// The board's configuration (counters trap) in every virtual mode: nothing is critical.
#[test]
fn trap_everything_is_virtualizable() {
    for args in [&[][..], &["--virtual-privilege", "m"], &["--virtual-privilege", "u", "--virtual-time"]] {
        let report = analyze(args);
        assert_eq!(critical_set(&report), ("empty".to_string(), vec![]), "{args:?}:\n{report}");
        assert!(
            verdict(&report).starts_with("Verdict: virtualizable by trap-and-emulate alone"),
            "{args:?}:\n{report}"
        );
        assert!(report.contains("counters: trap (mcounteren = 0x0)"), "the board's default:\n{report}");
    }
}

/// Delegated counters with virtual time: exactly the three counter reads are critical (the hardware performance
/// counters are never delegated), and trap-and-emulate alone no longer suffices.
#[test]
fn delegated_counters_make_exactly_the_counter_reads_critical() {
    for args in [&["--delegate-counters"][..], &["--delegate-counters", "--virtual-time", "--virtual-privilege", "u"]] {
        let report = analyze(args);
        let expected = ["rdcycle", "rdtime", "rdinstret"].map(String::from).to_vec();
        assert_eq!(critical_set(&report), ("3".to_string(), expected), "{args:?}:\n{report}");
        assert!(
            verdict(&report).starts_with("Verdict: not virtualizable by trap-and-emulate alone"),
            "{args:?}:\n{report}"
        );
    }
    // The machine's own counters are what a VM without virtual time is promised: nothing critical.
    let report = analyze(&["--delegate-counters", "--real-time"]);
    assert_eq!(critical_set(&report).0, "empty", "{report}");
}

/// Exposing a cache-block feature the virtual hart does not implement makes its operations critical.
#[test]
fn exposed_envcfg_features_reach_the_table() {
    let report = analyze(&["--envcfg", "cbze,fiom"]);
    assert_eq!(critical_set(&report), ("1".to_string(), vec!["cbo.zero".to_string()]), "{report}");
    assert!(report.contains("menvcfg = senvcfg = 0x81"), "{report}");
}
