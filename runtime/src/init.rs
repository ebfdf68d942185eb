//! Deterministic parameter initialisation from a seed. Each tensor draws from
//! its own stream, keyed by the seed and its name, so adding a parameter never
//! changes the others.

use lsc_interp::{Tensors, Value};
use lsc_ir::{Bindings, Program};

/// The standard deviation of weight matrices and embeddings (GPT-2's 0.02).
pub const INIT_STD: f64 = 0.02;

/// SplitMix64: a small, well-mixed generator; enough for initialisation and sampling.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index drawn from the distribution `p` (the last one if rounding
    /// leaves the draw beyond the total).
    pub fn categorical(&mut self, p: &[f64]) -> usize {
        let mut u = self.uniform();
        for (i, &q) in p.iter().enumerate() {
            if u < q {
                return i;
            }
            u -= q;
        }
        p.len().saturating_sub(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// FNV-1a, to key each parameter's stream by its name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Initialises every parameter of `program`: rank-1 `*.weight` (norm gains)
/// to 1, `*.bias` to 0, everything else from N(0, 0.02²).
///
/// The parameters are held up to three times while a program is prepared (here,
/// in its optimised form and in its plan),
/// so three times their bytes must fit in the available memory; otherwise nothing is
/// allocated and the error gives both figures.
pub fn init_params(program: &Program, seed: u64) -> Result<Tensors<f32>, String> {
    let mut shapes = Vec::new();
    for (n, name) in program.main.params() {
        let ty = &program.main.node(n).outputs[0];
        let shape =
            ty.concrete_shape(&Bindings::new()).map_err(|e| format!("parameter `{name}` has a symbolic shape: {e}"))?;
        shapes.push((name, shape));
    }
    let bytes: u64 = shapes.iter().map(|(_, s)| 4 * s.iter().product::<usize>() as u64).sum();
    crate::resources::check_fits(
        &format!(
            "initialising {} of parameters (held up to three times while a program is prepared)",
            crate::resources::show_bytes(bytes)
        ),
        3 * bytes,
        "use a smaller model",
    )?;
    let mut out = Tensors::new();
    for (name, shape) in shapes {
        let count: usize = shape.iter().product();
        let data = if name.ends_with(".bias") {
            vec![0.0; count]
        } else if shape.len() == 1 && name.ends_with(".weight") {
            vec![1.0; count]
        } else {
            let mut rng = Rng::new(seed ^ name_hash(name));
            (0..count).map(|_| (rng.normal() * INIT_STD) as f32).collect()
        };
        out.insert(name.to_string(), Value::floats(shape, data));
    }
    Ok(out)
}
