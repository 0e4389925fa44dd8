//! Load-test harness for Switchboard. Reserved as a workspace member; the
//! scenarios (fanout, connect, direct, churn) arrive with the load-test issue.

fn main() {
    eprintln!("switchboard-loadtest: no scenarios yet; see docs/benchmarks.md");
    std::process::exit(2);
}
