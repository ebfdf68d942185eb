fn main() {
    use lsc_models::mor::*;
    let cfg = MorConfig { kv_sharing: true, ..MorConfig::named("tiny").unwrap() };
    let p = build(&cfg, Rule::Threshold).unwrap();
    let (q, stats) = lsc_passes::saturate::optimize(
        &p,
        &lsc_passes::saturate::Config { keep_gradients: false, ..Default::default() },
    )
    .unwrap();
    println!("{:?} {} -> {}", stats.fired, stats.cost_before, stats.cost_after);
    println!("{}", lsc_ir::print_program(&q).unwrap());
}
