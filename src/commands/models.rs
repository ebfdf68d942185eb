//! `lsc models`: the registry.

use crate::error::CliResult;

/// Prints each built-in model with its configs and parameter counts.
pub fn run() -> CliResult {
    println!("{:<16} {:<8} {:>10}  description", "model", "config", "params");
    for m in lsc_models::MODELS {
        for (i, c) in m.configs.iter().enumerate() {
            let params = lsc_models::build(m.name, c)
                .ok()
                .and_then(|p| lsc_passes::parameter_count(&p).ok())
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into());
            let about = if i == 0 { m.summary } else { "" };
            println!("{:<16} {:<8} {:>10}  {about}", m.name, c, params);
        }
    }
    Ok(())
}
