//! Envoy configs in `envoy-configs/` are templates with `${NAME}` placeholders (paths and ports
//! differ per machine and per run); this fills them in and refuses to leave one unfilled.

use anyhow::{Result, bail};

/// Replaces every `${NAME}` with its value.
///
/// # Errors
/// When a placeholder is left without a value (a typo would otherwise reach Envoy).
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String> {
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    let unfilled: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.contains("${"))
        .collect();
    if !unfilled.is_empty() {
        bail!("unfilled placeholders: {unfilled:?}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_refuses_unfilled() {
        assert_eq!(render("a ${X} b", &[("X", "1")]).unwrap(), "a 1 b");
        assert!(render("a ${Y}", &[("X", "1")]).is_err());
        assert_eq!(
            render("# ${Y} in a comment\nz", &[]).unwrap(),
            "# ${Y} in a comment\nz"
        );
    }
}
