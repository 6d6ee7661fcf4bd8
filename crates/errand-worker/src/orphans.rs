//! Programs never outlive their worker.
//!
//! An external program runs in a process group of its own (so cancel can
//! stop it whole). If the worker is SIGKILLed or crashes, nothing would
//! stop that group: it would be re-parented to PID 1 and keep running
//! beside the job's next attempt, its side effects happening twice.
//!
//! Two guards, each enough for the common case:
//! - the program itself gets `PR_SET_PDEATHSIG(SIGKILL)` on Linux (see
//!   `external::die_with_this_process`): the kernel kills it when the
//!   worker dies;
//! - a watchdog process, one per worker process, started with the first
//!   program, kills every group still registered when the worker dies,
//!   and so the program's own children too (a shell script's `sleep`,
//!   a Python program's ffmpeg). The worker tells it which groups live
//!   over its stdin; the worker's death closes that pipe (the kernel
//!   closes a dead process's files, SIGKILL included), and the watchdog's
//!   `read` ends.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// POSIX sh: a set of group ids, emptied at end of input by SIGKILLing
/// each group. Parameter expansion removes an id without forking.
const WATCHDOG: &str = r#"groups=" "
while read -r op id; do
  case "$op" in
    +) groups="$groups$id " ;;
    -) case "$groups" in *" $id "*) groups="${groups%% $id *} ${groups#* $id }" ;; esac ;;
  esac
done
for id in $groups; do kill -s KILL -- "-$id" 2>/dev/null; done
"#;

static WATCHDOG_INPUT: OnceLock<Option<Mutex<ChildStdin>>> = OnceLock::new();

fn watchdog() -> Option<&'static Mutex<ChildStdin>> {
    WATCHDOG_INPUT
        .get_or_init(|| {
            let started = Command::new("/bin/sh")
                .args(["-c", WATCHDOG])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own group: a terminal's Ctrl-C must not end it before
                // the worker it guards.
                .process_group(0)
                .spawn();
            match started {
                // Never waited for: it ends with the worker.
                Ok(mut child) => child.stdin.take().map(Mutex::new),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the watchdog that stops programs when the worker dies; only the programs themselves are stopped then, not their children");
                    None
                }
            }
        })
        .as_ref()
}

fn tell(line: String) {
    if let Some(input) = watchdog() {
        let mut input = input
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A dead watchdog: the programs' own death signal still holds.
        let _ = input.write_all(line.as_bytes());
    }
}

/// The group `id` must die with this process.
pub(crate) fn guard(id: i32) {
    tell(format!("+ {id}\n"));
}

/// The group `id` is gone; its id may be reused.
pub(crate) fn release(id: i32) {
    tell(format!("- {id}\n"));
}
