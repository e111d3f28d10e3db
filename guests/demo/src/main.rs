//! `demo`: the default guest of `trapeze run` when no image is given. Prints a banner, an ASCII Mandelbrot set
//! drawn with integer fixed-point arithmetic only, a prime sieve summary and a Collatz record, then
//! `demo: done`, and exits 0 through the finisher. Everything is computed by the guest (about 10 million
//! instructions).
#![no_std]
#![no_main]

use rt::println;

/// Fixed-point scale of the Mandelbrot arithmetic: 24 fractional bits.
const FRAC: u32 = 24;
const ONE: i64 = 1 << FRAC;

/// Prints the Mandelbrot set over [-2.2, 0.8] x [-1.2, 1.2], one character per point.
fn mandelbrot() {
    const WIDTH: i64 = 72;
    const HEIGHT: i64 = 24;
    const MAX_ITER: u32 = 64;
    /// (fewest iterations to escape, shade): slow escapes close to the set get the darker shades.
    const SHADES: [(u32, u8); 11] = [
        (32, b'#'),
        (20, b'%'),
        (14, b'*'),
        (10, b'+'),
        (8, b'='),
        (6, b'-'),
        (5, b';'),
        (4, b':'),
        (3, b','),
        (2, b'.'),
        (0, b' '),
    ];
    let (x0, x1) = (-22 * ONE / 10, 8 * ONE / 10);
    let (y0, y1) = (-12 * ONE / 10, 12 * ONE / 10);
    for row in 0..HEIGHT {
        let ci = y0 + (y1 - y0) * row / (HEIGHT - 1);
        let mut line = [b' '; WIDTH as usize];
        for (col, out) in (0..WIDTH).zip(line.iter_mut()) {
            let cr = x0 + (x1 - x0) * col / (WIDTH - 1);
            let (mut zr, mut zi) = (0i64, 0i64);
            let mut iter = 0;
            while iter < MAX_ITER {
                let (zr2, zi2) = ((zr * zr) >> FRAC, (zi * zi) >> FRAC);
                if zr2 + zi2 > 4 * ONE {
                    break;
                }
                zi = ((2 * zr * zi) >> FRAC) + ci;
                zr = zr2 - zi2 + cr;
                iter += 1;
            }
            *out = match SHADES.iter().find(|(min, _)| iter >= *min) {
                _ if iter == MAX_ITER => b'@',
                Some((_, shade)) => *shade,
                None => b' ',
            };
        }
        // Without trailing blanks.
        let end = line.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
        line[..end].iter().copied().for_each(rt::console::putb);
        println!();
    }
}

const SIEVE_LIMIT: usize = 100_000;

/// One bit per odd number: bit i stands for 2i + 1; set means composite.
static mut SIEVE: [u64; SIEVE_LIMIT / 128 + 1] = [0; SIEVE_LIMIT / 128 + 1];

/// Sieve of Eratosthenes below [`SIEVE_LIMIT`]: (count, largest, twin prime pairs).
fn primes() -> (u32, u64, u32) {
    // SAFETY: single-threaded guest; the only reference to SIEVE is this one.
    let sieve = unsafe { &mut *core::ptr::addr_of_mut!(SIEVE) };
    let composite = |s: &[u64], n: usize| s[n / 128] >> ((n / 2) % 64) & 1 != 0;
    let mut n = 3;
    while n * n < SIEVE_LIMIT {
        if !composite(sieve, n) {
            let mut m = n * n;
            while m < SIEVE_LIMIT {
                sieve[m / 128] |= 1 << ((m / 2) % 64);
                m += 2 * n;
            }
        }
        n += 2;
    }
    let (mut count, mut largest, mut twins, mut previous) = (1u32, 2u64, 0u32, 2usize);
    let mut n = 3;
    while n < SIEVE_LIMIT {
        if !composite(sieve, n) {
            count += 1;
            largest = n as u64;
            if n - previous == 2 {
                twins += 1;
            }
            previous = n;
        }
        n += 2;
    }
    (count, largest, twins)
}

/// The start below `limit` with the longest Collatz chain: (start, steps).
fn collatz(limit: u64) -> (u64, u32) {
    let mut best = (1, 0);
    for start in 1..limit {
        let (mut n, mut steps) = (start, 0u32);
        while n != 1 {
            n = if n & 1 == 0 { n >> 1 } else { 3 * n + 1 };
            steps += 1;
        }
        if steps > best.1 {
            best = (start, steps);
        }
    }
    best
}

#[unsafe(no_mangle)]
extern "C" fn main() -> u32 {
    println!("trapeze demo guest: RV64 hello");
    println!();
    mandelbrot();
    println!();
    let (count, largest, twins) = primes();
    println!("primes below {SIEVE_LIMIT}: {count} (largest {largest}, {twins} twin pairs)");
    let (start, steps) = collatz(10_000);
    println!("longest Collatz chain below 10000: {start} ({steps} steps)");
    println!("demo: done");
    0
}
