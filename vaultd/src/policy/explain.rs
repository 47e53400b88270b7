//! Human sentences for `aivaultd --check-config` and `vaultctl policy check`.

use super::compile::{Compiled, Rule};
use super::{Isolation, RuleReport, SecretScope};

pub fn explain(p: &Compiled) -> Vec<RuleReport> {
    let mut out: Vec<RuleReport> = p.rules.iter().map(rule_report).collect();
    for g in &p.grants {
        let users: Vec<&str> = p
            .rules
            .iter()
            .filter(|r| {
                r.secrets
                    .iter()
                    .any(|s| s.scope == SecretScope::System && s.name == g.secret)
            })
            .map(|r| r.name.as_str())
            .collect();
        let mut warnings = Vec::new();
        let through = if users.is_empty() {
            warnings.push(format!("no rule names system secret {}", g.secret));
            "no rule yet".to_owned()
        } else {
            format!("rules {}", users.join(", "))
        };
        out.push(RuleReport {
            rule: format!("grant {}", g.secret),
            source: g.source.display().to_string(),
            effect: format!(
                "{} may have system secret {} delivered, through {through}",
                g.who_text, g.secret
            ),
            warnings,
        });
    }
    for pin in &p.pins {
        let mut cmds: Vec<String> = pin
            .commands
            .iter()
            .map(|c| c.display().to_string())
            .collect();
        cmds.dedup();
        out.push(RuleReport {
            rule: format!("pin {} ({})", pin.secret, pin.scope),
            source: pin.source.display().to_string(),
            effect: format!(
                "{} secret {} may only ever be given to {}; a rule giving it to any other command invalidates the policy",
                pin.scope,
                pin.secret,
                if cmds.is_empty() { "no command".to_owned() } else { cmds.join(", ") }
            ),
            warnings: Vec::new(),
        });
    }
    out.extend(p.broker.explain());
    out.extend(p.mcp.explain());
    out
}

fn rule_report(r: &Rule) -> RuleReport {
    let mut effect = format!("{} may run {}", r.who_text, r.command.display());
    if let Some(res) = &r.resolved {
        effect.push_str(&format!(" (at load time: {})", res.display()));
    }
    if let Some(sha) = r.sha256 {
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        effect.push_str(&format!(" pinned to sha256 {hex}"));
    }
    match &r.args {
        None => effect.push_str(" with any arguments"),
        Some(alts) => {
            let d: Vec<String> = alts.iter().map(|a| a.describe()).collect();
            effect.push_str(&format!(" with arguments matching {}", d.join(" or ")));
        }
    }
    let mut s: Vec<String> = r
        .secrets
        .iter()
        .map(|s| match s.scope {
            SecretScope::User => format!("the caller's secret {} as {}", s.name, s.env),
            SecretScope::System => format!(
                "system secret {} as {} (if granted to the caller)",
                s.name, s.env
            ),
        })
        .collect();
    s.extend(r.secret_globs.iter().map(|g| match g.scope {
        SecretScope::User => format!(
            "each of the caller's own secrets matching {} (as the variable its name maps to)",
            g.glob
        ),
        SecretScope::System => format!(
            "each system secret matching {} that is granted to the caller (as the variable its name maps to)",
            g.glob
        ),
    }));
    if s.is_empty() {
        effect.push_str("; it receives no secrets");
    } else {
        effect.push_str(&format!("; it receives {}", s.join(", ")));
    }
    if !r.pass_env.is_empty() {
        effect.push_str(&format!(
            "; caller variables passed through: {}",
            r.pass_env.join(", ")
        ));
    }
    effect.push_str(match r.isolation {
        Isolation::DynamicUid => "; it runs under a fresh dynamic uid",
        Isolation::Caller => "; it runs as the caller's own uid",
    });
    effect.push_str("; ");
    effect.push_str(&r.sandbox.describe());
    if !r.sandbox.require_full_landlock {
        effect.push_str(
            " (without Landlock TCP support, before Linux 6.7, network access is not restricted)",
        );
    }
    if let Some(a) = &r.approval {
        effect.push_str("; ");
        effect.push_str(&a.describe());
    }
    RuleReport {
        rule: r.name.clone(),
        source: r.source.display().to_string(),
        effect,
        warnings: r.warnings.clone(),
    }
}
