//! Which environment variable names a policy may use.
//!
//! The same rules cover the names secrets are delivered under and the names
//! passed through from the caller: a secret's value may be chosen by the
//! caller (user-scope secrets are the caller's own), and a pass-through
//! value always is. So a name is refused when the variable can load or run
//! code, redirect where a secret is sent, weaken TLS, or override what the
//! daemon itself sets. Names are compared ignoring ASCII case (`http_proxy`
//! is honoured as often as `HTTP_PROXY`). The list cannot know every tool's
//! variables: pass through only what is plainly harmless (see
//! [`is_plainly_harmless`]); anything else is warned about by `explain`.

/// How a table entry matches a name.
#[derive(Debug, Clone, Copy)]
enum Match {
    Exact(&'static str),
    Prefix(&'static str),
}

/// Every refused name or name family, with the reason given to the admin.
const FORBIDDEN: &[(Match, &str)] = {
    use Match::{Exact as E, Prefix as P};
    const LOADER: &str = "the dynamic loader reads it: it can inject code into the command";
    const SHELL_STARTUP: &str = "shells run or source it at startup";
    const SHELL_PARSE: &str = "it changes how shells parse and run scripts";
    const INTERP: &str = "an interpreter loads code or options from it";
    const OURS: &str = "the runner sets it; overriding it would change where the command looks for its programs and files";
    const RUNS: &str = "programs start the command it names";
    const RESOLVER: &str = "it redirects host name resolution";
    const PROXY: &str =
        "it sends the command's traffic, and the secrets in it, through a host the caller chooses";
    const TLS: &str = "it replaces or weakens TLS verification, so secrets can be intercepted";
    const CONFIG: &str = "it points the tool at a configuration file that can run commands";
    &[
        (P("LD_"), LOADER),
        (E("GCONV_PATH"), LOADER),
        (E("LOCPATH"), "glibc loads locale data from it; crafted locale files have been used to exploit programs"),
        (E("NLSPATH"), "catalog lookups read files from it"),
        (P("MALLOC_"), "glibc tunes its allocator from it"),
        (P("GLIBC_"), "GLIBC_TUNABLES has been used to gain code execution in ld.so"),
        (P("DYLD_"), LOADER),
        (E("BASH_ENV"), SHELL_STARTUP),
        (E("ENV"), SHELL_STARTUP),
        (P("BASH_FUNC_"), "bash imports shell functions from it"),
        (E("IFS"), SHELL_PARSE),
        (E("CDPATH"), SHELL_PARSE),
        (E("GLOBIGNORE"), SHELL_PARSE),
        (E("SHELLOPTS"), SHELL_PARSE),
        (E("BASHOPTS"), SHELL_PARSE),
        (E("PS0"), "bash expands (and so runs) it before each command"),
        (E("PS4"), "bash expands (and so runs) it when tracing"),
        (E("PROMPT_COMMAND"), "bash runs it before each prompt"),
        (P("PYTHON"), INTERP),
        (P("PERL5"), INTERP),
        (E("PERLLIB"), INTERP),
        (E("PERL_MB_OPT"), INTERP),
        (E("NODE_OPTIONS"), INTERP),
        (E("NODE_PATH"), INTERP),
        (E("NODE_REPL_EXTERNAL_MODULE"), INTERP),
        (E("RUBYOPT"), INTERP),
        (E("RUBYLIB"), INTERP),
        (E("GEM_HOME"), INTERP),
        (E("GEM_PATH"), INTERP),
        (P("LUA_"), INTERP),
        (E("TCLLIBPATH"), INTERP),
        (E("PHPRC"), INTERP),
        (E("PHP_INI_SCAN_DIR"), INTERP),
        (E("CLASSPATH"), INTERP),
        (E("JAVA_TOOL_OPTIONS"), INTERP),
        (E("_JAVA_OPTIONS"), INTERP),
        (E("JDK_JAVA_OPTIONS"), INTERP),
        (E("OPENSSL_CONF"), "OpenSSL loads engines and providers named in it"),
        (E("OPENSSL_ENGINES"), "OpenSSL loads engines from it"),
        (E("OPENSSL_MODULES"), "OpenSSL loads providers from it"),
        (E("PATH"), OURS),
        (E("HOME"), OURS),
        (E("TMPDIR"), OURS),
        (E("SHELL"), OURS),
        (E("USER"), OURS),
        (E("LOGNAME"), OURS),
        (E("PWD"), OURS),
        (P("XDG_"), OURS),
        (E("EDITOR"), RUNS),
        (E("VISUAL"), RUNS),
        (E("PAGER"), RUNS),
        (E("MANPAGER"), RUNS),
        (E("BROWSER"), RUNS),
        (E("LESSOPEN"), RUNS),
        (E("LESSCLOSE"), RUNS),
        (E("SSH_ASKPASS"), RUNS),
        (E("SUDO_ASKPASS"), RUNS),
        (E("GIT_ASKPASS"), RUNS),
        (E("GIT_SSH"), RUNS),
        (E("GIT_SSH_COMMAND"), RUNS),
        (E("GIT_PAGER"), RUNS),
        (E("GIT_EDITOR"), RUNS),
        (E("GIT_EXTERNAL_DIFF"), RUNS),
        (E("GIT_PROXY_COMMAND"), RUNS),
        (E("GIT_EXEC_PATH"), RUNS),
        (E("GIT_TEMPLATE_DIR"), "git copies hooks from it, and hooks run"),
        (P("GIT_CONFIG"), "git takes arbitrary configuration from it, including commands to run"),
        (E("HOSTALIASES"), RESOLVER),
        (E("LOCALDOMAIN"), RESOLVER),
        (E("RES_OPTIONS"), RESOLVER),
        (E("HTTP_PROXY"), PROXY),
        (E("HTTPS_PROXY"), PROXY),
        (E("ALL_PROXY"), PROXY),
        (E("FTP_PROXY"), PROXY),
        (E("SSL_CERT_FILE"), TLS),
        (E("SSL_CERT_DIR"), TLS),
        (E("SSLKEYLOGFILE"), "TLS libraries write session keys to it, which decrypts captured traffic"),
        (E("CURL_CA_BUNDLE"), TLS),
        (E("REQUESTS_CA_BUNDLE"), TLS),
        (E("AWS_CA_BUNDLE"), TLS),
        (E("NODE_EXTRA_CA_CERTS"), TLS),
        (E("NODE_TLS_REJECT_UNAUTHORIZED"), TLS),
        (E("GIT_SSL_NO_VERIFY"), TLS),
        (E("GIT_SSL_CAINFO"), TLS),
        (E("GIT_SSL_CAPATH"), TLS),
        (E("CURL_HOME"), CONFIG),
        (E("WGETRC"), CONFIG),
        (E("AWS_CONFIG_FILE"), CONFIG),
        (E("AWS_SHARED_CREDENTIALS_FILE"), CONFIG),
        (E("KUBECONFIG"), CONFIG),
        (E("DOCKER_CONFIG"), CONFIG),
        (E("GH_CONFIG_DIR"), CONFIG),
        (E("NPM_CONFIG_USERCONFIG"), CONFIG),
        (E("TERMINFO"), "curses parses terminal descriptions from it"),
        (E("TERMINFO_DIRS"), "curses parses terminal descriptions from it"),
    ]
};

/// Caller variables that only change presentation; passing any other name
/// through earns a warning.
const HARMLESS: &[Match] = &[
    Match::Exact("LANG"),
    Match::Exact("LANGUAGE"),
    Match::Prefix("LC_"),
    Match::Exact("TERM"),
    Match::Exact("COLORTERM"),
    Match::Exact("TZ"),
    Match::Exact("COLUMNS"),
    Match::Exact("LINES"),
    Match::Exact("NO_COLOR"),
    Match::Exact("CLICOLOR"),
    Match::Exact("CLICOLOR_FORCE"),
    Match::Exact("FORCE_COLOR"),
];

fn matches(m: Match, upper: &str) -> bool {
    match m {
        Match::Exact(e) => upper == e,
        Match::Prefix(p) => upper.starts_with(p),
    }
}

/// Accepts `name` as a variable for a secret or for pass-through, or says why not.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "environment variable name {name:?} must match [A-Za-z_][A-Za-z0-9_]*"
        ));
    }
    let upper = name.to_ascii_uppercase();
    match FORBIDDEN.iter().find(|(m, _)| matches(*m, &upper)) {
        Some((_, why)) => Err(format!(
            "environment variable {name} is never accepted: {why}"
        )),
        None => Ok(()),
    }
}

/// True for pass-through names that only affect presentation (locale, terminal).
pub fn is_plainly_harmless(name: &str) -> bool {
    HARMLESS.iter().any(|m| matches(*m, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        for ok in ["GH_TOKEN", "_X", "a1", "AWS_SECRET_ACCESS_KEY"] {
            assert_eq!(check_env_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É", "A\0"] {
            assert!(check_env_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn forbidden_names_are_refused_with_a_reason() {
        for bad in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "ld_preload",
            "BASH_ENV",
            "ENV",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PERL5OPT",
            "PERLLIB",
            "NODE_OPTIONS",
            "NODE_PATH",
            "RUBYOPT",
            "RUBYLIB",
            "GCONV_PATH",
            "IFS",
            "CDPATH",
            "GLOBIGNORE",
            "SHELLOPTS",
            "BASHOPTS",
            "PS4",
            "PROMPT_COMMAND",
            "HOSTALIASES",
            "LOCALDOMAIN",
            "RES_OPTIONS",
            "TMPDIR",
            "HOME",
            "PATH",
            "GLIBC_TUNABLES",
            "https_proxy",
            "SSLKEYLOGFILE",
            "GIT_CONFIG_COUNT",
            "PAGER",
            "XDG_CONFIG_HOME",
        ] {
            let e = check_env_name(bad).expect_err(bad);
            assert!(e.contains("never accepted: "), "{bad}: {e}");
        }
    }

    #[test]
    fn harmless() {
        assert!(is_plainly_harmless("LANG"));
        assert!(is_plainly_harmless("LC_ALL"));
        assert!(!is_plainly_harmless("GH_HOST"));
    }
}
