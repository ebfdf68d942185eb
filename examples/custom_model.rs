//! Write your own model with the lsc DSL, save it as `.lsir`, then compile or
//! run it with the CLI:
//!
//! ```sh
//! cargo run --example custom_model -- out/custom.lsir
//! cargo run -- compile --ir out/custom.lsir --emit ir -o out/custom
//! cargo run -- run --ir out/custom.lsir --prompt "Hello"
//! ```
//!
//! The model: a GPT-2-style block stack (LayerNorm, GELU MLP with biases) with
//! LS-attention (2 local heads of window 8, 2 global heads) and a tied-free head.

use lsc_frontend::modules::{CausalSelfAttention, Embedding, GeluMlp, LayerNorm, Linear};
use lsc_frontend::{DslError, ModelBuilder};
use lsc_ir::{DType, Dim, Program};

const VOCAB: usize = 256;
const D: usize = 48;
const LAYERS: usize = 2;
const MAX_POS: usize = 128;

/// Builds the forward graph: `input_ids: i64[B,T]` → `logits: f32[B,T,256]`.
pub fn build() -> Result<Program, DslError> {
    let b = ModelBuilder::new();
    let ids = b.input("input_ids", DType::I64, &[Dim::sym("B"), Dim::sym("T")]);
    let tok = Embedding::new(&b, "tok", VOCAB, D);
    let pos = b.param("pos.weight", DType::F32, &[MAX_POS.into(), D.into()]);
    let mut x = &tok.forward(&ids) + &pos.slice(0, 0i64, Dim::sym("T"));
    for i in 0..LAYERS {
        let ln1 = LayerNorm::new(&b, &format!("blocks.{i}.ln1"), D, 1e-5);
        let attn = CausalSelfAttention::ls(&b, &format!("blocks.{i}.attn"), D, 2, 2, 8, true);
        let ln2 = LayerNorm::new(&b, &format!("blocks.{i}.ln2"), D, 1e-5);
        let mlp = GeluMlp::new(&b, &format!("blocks.{i}.mlp"), D, 4 * D);
        x = &x + &attn.forward(&ln1.forward(&x));
        x = &x + &mlp.forward(&ln2.forward(&x));
    }
    let ln_f = LayerNorm::new(&b, "ln_f", D, 1e-5);
    let head = Linear::new(&b, "head", D, VOCAB, false);
    b.output("logits", &head.forward(&ln_f.forward(&x)));
    b.finish()
}

#[allow(dead_code)]
fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "out/custom.lsir".into());
    let program = match build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let text = lsc_ir::print_program(&program).expect("a verified program prints");
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    println!("wrote {path} ({} parameters)", program.main.params().len());
}
