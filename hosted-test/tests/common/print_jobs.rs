//! What the `print-jobs` guest (`guests/print-jobs`) prints, for the tests that check a printer's output (hosted
//! and on the native board): its processes, their jobs, and each job's exact body.

/// Processes of the guest, each printing its own jobs.
pub const PROCESSES: usize = 3;
/// Jobs each process prints.
pub const JOBS: usize = 4;

/// The body of the `job`th job of process `process`: a title line, then numbered lines of 63 characters.
pub fn expected_job(process: usize, job: usize) -> String {
    let lines = 20 + 15 * process;
    let mut body = format!("process {process} job {job}: {lines} lines\n");
    for line in 1..=lines {
        let mut text = format!("{process}.{job}.{line} ");
        while text.len() < 63 {
            let filler = b'a' + ((text.len() as u8).wrapping_add(line as u8)) % 26;
            text.push(filler as char);
        }
        text.push('\n');
        body.push_str(&text);
    }
    body
}
