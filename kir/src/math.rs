//! The transcendental functions, written once in kernel IR so that every
//! backend computes the same function (Cranelift has no libm; LLVM would
//! otherwise call scalar libm). Each takes and returns an f32 expression and
//! binds its intermediates in `b`. Measured maximum errors over the whole f32
//! range (every 64th bit pattern, against f64 references; `tests/math.rs`):
//! exp 1 ulp, log 2 ulp, tanh 2 ulp, sigmoid 2 ulp
//! (`cargo test -p lsc-cranelift transcendentals -- --nocapture`).

use crate::{Binary, Body, Compare, Expr, Unary};

fn f(x: f32) -> Expr {
    Expr::F32(x)
}

fn i(x: i32) -> Expr {
    Expr::I32(x)
}

/// Horner evaluation of `c[0] + c[1]·x + c[2]·x² + …`.
fn horner(b: &mut Body, x: &Expr, c: &[f32]) -> Expr {
    let mut acc = f(c[c.len() - 1]);
    for &k in c[..c.len() - 1].iter().rev() {
        acc = b.bind(acc.bin(Binary::Mul, x.clone()).bin(Binary::Add, f(k)));
    }
    acc
}

/// `2^k` for an integer-valued i32 `k` in `[−126, 127]`, from its bits.
fn pow2(b: &mut Body, k: Expr) -> Expr {
    b.bind(Expr::FromBits(Box::new(k.bin(Binary::IAdd, i(127)).bin(Binary::Shl, i(23)))))
}

/// `e^x`: `x = n·ln2 + r` (Cody–Waite), a degree-7 polynomial for `e^r` on
/// `|r| ≤ ln2/2`, then `· 2^n` in two steps so that results in the subnormal
/// range and overflow to ∞ come out right.
pub fn exp(b: &mut Body, x: Expr) -> Expr {
    let x = b.bind(x.bin(Binary::Max, f(-104.0)).bin(Binary::Min, f(89.0)));
    let n = b.bind(x.clone().bin(Binary::Mul, f(std::f32::consts::LOG2_E)).un(Unary::Nearest));
    let r = b.bind(
        x.bin(Binary::Sub, n.clone().bin(Binary::Mul, f(0.693_145_75)))
            .bin(Binary::Sub, n.clone().bin(Binary::Mul, f(1.428_606_8e-6))),
    );
    let p = horner(b, &r, &[1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0]);
    let n = b.bind(Expr::ToInt(Box::new(n)));
    // n = n1 + n2 with both halves within 2^k's exponent range.
    let n1 =
        b.bind(Expr::ToInt(Box::new(Expr::ToFloat(Box::new(n.clone())).bin(Binary::Mul, f(0.5)).un(Unary::Floor))));
    let n2 = b.bind(n.bin(Binary::ISub, n1.clone()));
    let (s1, s2) = (pow2(b, n1), pow2(b, n2));
    b.bind(p.bin(Binary::Mul, s1).bin(Binary::Mul, s2))
}

/// `ln x`: `x = 2^e · m` with `m ∈ [√½, √2)`, then `ln m = 2·atanh(s)`,
/// `s = (m − 1)/(m + 1)`, as an odd polynomial. Subnormals are scaled first;
/// `ln 0 = −∞`, `ln x = NaN` for `x < 0`, `ln ∞ = ∞`.
pub fn log(b: &mut Body, x: Expr) -> Expr {
    let x = b.bind(x);
    let tiny = b.bind(x.clone().cmp(Compare::Lt, f(f32::MIN_POSITIVE)));
    let scaled = b.bind(Expr::select(tiny.clone(), x.clone().bin(Binary::Mul, f(8_388_608.0)), x.clone()));
    let bits = b.bind(Expr::ToBits(Box::new(scaled)));
    let e = b.bind(
        bits.clone()
            .bin(Binary::ShrU, i(23))
            .bin(Binary::ISub, i(127))
            .bin(Binary::ISub, Expr::select(tiny, i(23), i(0))),
    );
    let m = b.bind(Expr::FromBits(Box::new(bits.bin(Binary::And, i(0x007f_ffff)).bin(Binary::Or, i(0x3f80_0000)))));
    let big = b.bind(m.clone().cmp(Compare::Gt, f(std::f32::consts::SQRT_2)));
    let m = b.bind(Expr::select(big.clone(), m.clone().bin(Binary::Mul, f(0.5)), m));
    let e = b.bind(Expr::ToFloat(Box::new(e.bin(Binary::IAdd, Expr::select(big, i(1), i(0))))));
    let s = b.bind(m.clone().bin(Binary::Sub, f(1.0)).bin(Binary::Div, m.bin(Binary::Add, f(1.0))));
    let s2 = b.bind(s.clone().bin(Binary::Mul, s.clone()));
    let odd = horner(b, &s2, &[2.0, 2.0 / 3.0, 2.0 / 5.0, 2.0 / 7.0, 2.0 / 9.0, 2.0 / 11.0]);
    let ln = b.bind(
        e.clone()
            .bin(Binary::Mul, f(0.693_145_75))
            .bin(Binary::Add, s.bin(Binary::Mul, odd).bin(Binary::Add, e.bin(Binary::Mul, f(1.428_606_8e-6)))),
    );
    // Special values: 0 → −∞, negative or NaN → NaN, ∞ → ∞.
    let ln = b.bind(Expr::select(x.clone().cmp(Compare::Eq, f(0.0)), f(f32::NEG_INFINITY), ln));
    let ln = b.bind(Expr::select(x.clone().cmp(Compare::Eq, f(f32::INFINITY)), f(f32::INFINITY), ln));
    b.bind(Expr::select(x.clone().cmp(Compare::Ge, f(0.0)), ln, f(f32::NAN)))
}

/// `tanh x`: an odd Taylor polynomial for `|x| < 0.5`, else
/// `sign(x)·(1 − 2/(e^{2|x|} + 1))` (which saturates to ±1).
pub fn tanh(b: &mut Body, x: Expr) -> Expr {
    let x = b.bind(x);
    let a = b.bind(x.clone().un(Unary::Abs));
    let x2 = b.bind(x.clone().bin(Binary::Mul, x.clone()));
    let odd = horner(
        b,
        &x2,
        &[
            1.0,
            -1.0 / 3.0,
            2.0 / 15.0,
            -17.0 / 315.0,
            62.0 / 2835.0,
            -1382.0 / 155_925.0,
            21844.0 / 6_081_075.0,
            -929_569.0 / 638_512_875.0,
        ],
    );
    let small = b.bind(x.clone().bin(Binary::Mul, odd));
    let e = exp(b, a.clone().bin(Binary::Mul, f(2.0)));
    let big = b.bind(f(1.0).bin(Binary::Sub, f(2.0).bin(Binary::Div, e.bin(Binary::Add, f(1.0)))));
    let signed = b.bind(Expr::select(x.clone().cmp(Compare::Lt, f(0.0)), big.clone().un(Unary::Neg), big));
    let out = b.bind(Expr::select(a.cmp(Compare::Lt, f(0.5)), small, signed));
    // NaN in, NaN out (the comparisons above are false for NaN).
    b.bind(Expr::select(x.clone().cmp(Compare::Ne, x.clone()), x, out))
}

/// `σ(x)`, from `t = e^{−|x|}` (never overflows): `1/(1 + t)` for `x ≥ 0`,
/// `t/(1 + t)` for `x < 0` (accurate down to the subnormals).
pub fn sigmoid(b: &mut Body, x: Expr) -> Expr {
    let x = b.bind(x);
    let t = exp(b, x.clone().un(Unary::Abs).un(Unary::Neg));
    let s = b.bind(f(1.0).bin(Binary::Div, f(1.0).bin(Binary::Add, t.clone())));
    b.bind(Expr::select(x.cmp(Compare::Lt, f(0.0)), t.bin(Binary::Mul, s.clone()), s))
}

/// `sin x` (`cos`: `quarter = 1`): `x = k·π/2 + r` (Cody–Waite in three
/// parts, accurate for `|x|` up to about 10⁵), then sine or cosine
/// polynomials on `|r| ≤ π/4` picked and signed by `(k + quarter) mod 4`.
fn sin_quarter(b: &mut Body, x: Expr, quarter: i32) -> Expr {
    let x = b.bind(x);
    let k = b.bind(x.clone().bin(Binary::Mul, f(std::f32::consts::FRAC_2_PI)).un(Unary::Nearest));
    let r = b.bind(
        x.bin(Binary::Sub, k.clone().bin(Binary::Mul, f(1.570_312_5)))
            .bin(Binary::Sub, k.clone().bin(Binary::Mul, f(4.837_513e-4)))
            .bin(Binary::Sub, k.clone().bin(Binary::Mul, f(7.549_79e-8))),
    );
    let z = b.bind(r.clone().bin(Binary::Mul, r.clone()));
    let sp = horner(b, &z, &[-1.666_665_5e-1, 8.332_161e-3, -1.951_529_6e-4]);
    let s = b.bind(r.clone().bin(Binary::Add, r.bin(Binary::Mul, z.clone()).bin(Binary::Mul, sp)));
    let cp = horner(b, &z, &[4.166_664_6e-2, -1.388_731_6e-3, 2.443_315_7e-5]);
    let c = b.bind(
        f(1.0)
            .bin(Binary::Sub, z.clone().bin(Binary::Mul, f(0.5)))
            .bin(Binary::Add, z.clone().bin(Binary::Mul, z).bin(Binary::Mul, cp)),
    );
    let q = b.bind(Expr::ToInt(Box::new(k)).bin(Binary::IAdd, i(quarter)).bin(Binary::And, i(3)));
    let odd = b.bind(q.clone().bin(Binary::And, i(1)).cmp(Compare::Eq, i(1)));
    let v = b.bind(Expr::select(odd, c, s));
    let negative = b.bind(q.bin(Binary::And, i(2)).cmp(Compare::Eq, i(2)));
    b.bind(Expr::select(negative, v.clone().un(Unary::Neg), v))
}

/// `sin x` (see [`sin_quarter`]).
pub fn sin(b: &mut Body, x: Expr) -> Expr {
    sin_quarter(b, x, 0)
}

/// `cos x = sin(x + π/2)`, reduced as `sin` is.
pub fn cos(b: &mut Body, x: Expr) -> Expr {
    sin_quarter(b, x, 1)
}
