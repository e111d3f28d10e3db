//! `trapeze bench --scaling`: how a multi-hart guest scales when each hart gets a host thread of its own.
//!
//! Method: the `hash-harts` guest (every hart hashes a buffer of its own, the same work on each: see
//! `guests/hash-harts`) runs as a whole `trapeze run` process, timed from start to exit, on one hart, then on N
//! harts with every hart on one thread (`-accel tcg,thread=single`) and with a thread per hart
//! (`tcg,thread=multi`). N harts do N times one hart's work, so perfect scaling keeps the multi-threaded time at
//! the one-hart time (a speed-up of N over the single thread), as long as the host has N free cores. Every run
//! must pass the guest's own check, or the command fails.
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The scaling guest, built from `guests/hash-harts` by the build script.
const HASH_HARTS: &[u8] = include_bytes!(env!("TRAPEZE_GUEST_HASH_HARTS"));

/// The engines the table measures: those with a code cache, whose speed matters.
pub const SCALING_ENGINES: [&str; 2] = ["threaded", "dbt"];

/// Seconds one `trapeze run` of the guest takes, best of `iterations`.
fn time_run(trapeze: &Path, image: &Path, args: &[&str], iterations: u32) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..iterations {
        let start = Instant::now();
        let output = Command::new(trapeze)
            .arg("run")
            .arg(image)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", trapeze.display()))?;
        let seconds = start.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.contains(": pass") {
            return Err(format!(
                "hash-harts {}: {}\n{stdout}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        best = best.min(seconds);
    }
    Ok(best)
}

/// Prints the scaling table for `harts` harts on each of `engines` that has a code cache.
pub fn run(engines: &[&str], harts: u32, iterations: u32) -> Result<(), String> {
    let trapeze = std::env::current_exe().map_err(|e| format!("cannot find the trapeze binary: {e}"))?;
    let image = std::env::temp_dir().join(format!("trapeze-hash-harts-{}.elf", std::process::id()));
    std::fs::write(&image, HASH_HARTS).map_err(|e| format!("cannot write {}: {e}", image.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!();
    println!(
        "scaling: hash-harts, seconds per whole run (best of {iterations}), {harts} harts doing {harts}x one hart's work; \
         {cores} host cores"
    );
    println!(
        "{:<10} {:>10} {:>14} {:>14} {:>10}",
        "engine",
        "1 hart",
        format!("{harts}, 1 thread"),
        format!("{harts}, {harts} threads"),
        "speed-up"
    );
    let smp = harts.to_string();
    let result = (|| {
        for engine in engines.iter().filter(|engine| SCALING_ENGINES.contains(engine)) {
            let one = time_run(&trapeze, &image, &["--engine", engine, "-smp", "1"], iterations)?;
            let single = ["--engine", engine, "-smp", &smp, "--accel", "tcg,thread=single"];
            let single = time_run(&trapeze, &image, &single, iterations)?;
            let multi = ["--engine", engine, "-smp", &smp, "--accel", "tcg,thread=multi"];
            let multi = time_run(&trapeze, &image, &multi, iterations)?;
            println!("{engine:<10} {one:>10.2} {single:>14.2} {multi:>14.2} {:>10.2}", single / multi);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&image);
    result
}
