//! Branch- and call-heavy kernels of `bench-branch`: recursive Fibonacci, evaluation of a random expression tree
//! through a table of function pointers, a 16-way `match` state machine, and lookups in a binary search tree.
use crate::{fold, Report, Rng};

/// Rounds of the measured workload.
pub const FULL: u32 = 12;
/// Rounds of the quick variant the tests run.
pub const SMALL: u32 = 1;

/// Nodes of the expression tree (a complete binary tree: 2^11 - 1).
pub const EXPR_NODES: usize = (1 << 11) - 1;
/// Keys in the binary search tree.
pub const BST_NODES: usize = 4096;

/// One expression tree node: an operation (index into the evaluator table), its children, a constant.
#[derive(Clone, Copy, Debug, Default)]
struct Node {
    op: u8,
    left: u16,
    right: u16,
    constant: u32,
}

/// Memory the branch kernels work in.
pub struct Scratch {
    expr: [Node; EXPR_NODES],
    key: [u32; BST_NODES],
    left: [u16; BST_NODES],
    right: [u16; BST_NODES],
}

impl Scratch {
    /// All zeros (so a `static` of it lives in `.bss`).
    pub const fn new() -> Self {
        const ZERO: Node = Node { op: 0, left: 0, right: 0, constant: 0 };
        Self { expr: [ZERO; EXPR_NODES], key: [0; BST_NODES], left: [0; BST_NODES], right: [0; BST_NODES] }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `scale` rounds of every branch kernel.
pub fn run(scale: u32, s: &mut Scratch) -> Report<4> {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let mut parts = [0u64; 4];
    for round in 0..scale {
        parts[0] = fold(parts[0], fib(core::hint::black_box(22 + round % 3)));

        build_expression(&mut rng, &mut s.expr);
        for x in 0..24 {
            parts[1] = fold(parts[1], eval(&s.expr, 0, x));
        }

        let seed = rng.next_u64();
        parts[2] = fold(parts[2], state_machine(seed, 400_000));

        parts[3] = fold(parts[3], bst_round(&mut rng, s));
    }
    Report { names: ["fib", "exprtree", "switch", "bst"], parts }
}

/// Fibonacci by plain double recursion.
#[inline(never)]
pub fn fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// An evaluator of one node kind: the tree, the node, the variable.
type Eval = fn(&[Node; EXPR_NODES], usize, u64) -> u64;

/// Evaluators by `Node::op`: 0..=1 are leaves, the rest combine children.
static EVALUATORS: [Eval; 8] = [
    |tree, node, _| u64::from(tree[node].constant),
    |tree, node, x| x.wrapping_mul(u64::from(tree[node].constant) | 1),
    |tree, node, x| eval(tree, left(tree, node), x).wrapping_add(eval(tree, right(tree, node), x)),
    |tree, node, x| eval(tree, left(tree, node), x).wrapping_sub(eval(tree, right(tree, node), x)),
    |tree, node, x| eval(tree, left(tree, node), x).wrapping_mul(eval(tree, right(tree, node), x) | 1),
    |tree, node, x| eval(tree, left(tree, node), x) ^ eval(tree, right(tree, node), x).rotate_left(17),
    // A conditional: only one child is evaluated.
    |tree, node, x| {
        if (x ^ u64::from(tree[node].constant)) & 1 != 0 {
            eval(tree, left(tree, node), x)
        } else {
            eval(tree, right(tree, node), x) >> 1
        }
    },
    |tree, node, x| eval(tree, left(tree, node), x).min(eval(tree, right(tree, node), x) ^ 0x5555),
];

fn left(tree: &[Node; EXPR_NODES], node: usize) -> usize {
    usize::from(tree[node].left)
}

fn right(tree: &[Node; EXPR_NODES], node: usize) -> usize {
    usize::from(tree[node].right)
}

/// Evaluates the subtree at `node` with variable `x`, through the evaluator table.
#[inline(never)]
fn eval(tree: &[Node; EXPR_NODES], node: usize, x: u64) -> u64 {
    EVALUATORS[usize::from(tree[node].op & 7)](tree, node, x)
}

/// A complete binary tree in heap order: random leaves (constants and the variable) and random operations.
fn build_expression(rng: &mut Rng, tree: &mut [Node; EXPR_NODES]) {
    for (index, node) in tree.iter_mut().enumerate() {
        let first_child = 2 * index + 1;
        let r = rng.next_u32();
        *node = if first_child < EXPR_NODES {
            Node { op: 2 + (r % 6) as u8, left: first_child as u16, right: first_child as u16 + 1, constant: r >> 8 }
        } else {
            Node { op: (r & 1) as u8, left: 0, right: 0, constant: r >> 1 }
        };
    }
}

/// A 16-state machine whose next state depends on the data: each `match` arm does a different update.
pub fn state_machine(seed: u64, steps: u32) -> u64 {
    let (mut a, mut b, mut c) = (seed, seed.rotate_left(21) | 1, !seed);
    let mut state = seed as u32;
    for _ in 0..steps {
        match state & 15 {
            0 => a = a.wrapping_add(b),
            1 => b ^= a >> 7,
            2 => c = c.wrapping_mul(5).wrapping_add(1),
            3 => a = a.rotate_left(9),
            4 => b = b.wrapping_sub(c),
            5 => c ^= c << 13,
            6 => a ^= b & c,
            7 => b = b.wrapping_add(0x9e37),
            8 => c = c.rotate_right(3) ^ a,
            9 => a = a.wrapping_mul(3),
            10 => b |= 1 << (a & 63),
            11 => c = c.wrapping_add(b >> 3),
            12 => a = !a,
            13 => b = b.rotate_left((c & 31) as u32),
            14 => c ^= 0xdead_beef,
            _ => (a, b) = (b, a),
        }
        state = (state >> 4) ^ (a as u32).wrapping_add(c as u32);
    }
    fold(fold(a, b), c)
}

/// Inserts random keys into an (unbalanced) binary search tree, then looks up as many random keys, counting hits
/// and the depth walked.
fn bst_round(rng: &mut Rng, s: &mut Scratch) -> u64 {
    const NONE: u16 = u16::MAX;
    s.key[0] = rng.next_u32() & 0x3f_ffff;
    s.left[0] = NONE;
    s.right[0] = NONE;
    for node in 1..BST_NODES {
        let key = rng.next_u32() & 0x3f_ffff;
        s.key[node] = key;
        s.left[node] = NONE;
        s.right[node] = NONE;
        let mut at = 0usize;
        loop {
            let link = if key < s.key[at] { &mut s.left[at] } else { &mut s.right[at] };
            if *link == NONE {
                *link = node as u16;
                break;
            }
            at = usize::from(*link);
        }
    }
    let (mut hits, mut depth) = (0u64, 0u64);
    for _ in 0..3 * BST_NODES {
        let key = rng.next_u32() & 0x3f_ffff;
        let mut at = 0u16;
        while at != NONE {
            let here = s.key[usize::from(at)];
            depth += 1;
            if key == here {
                hits += 1;
                break;
            }
            at = if key < here { s.left[usize::from(at)] } else { s.right[usize::from(at)] };
        }
    }
    fold(hits, depth)
}
