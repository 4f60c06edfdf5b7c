//! The built-in secret patterns: what [`Masker`](super::mask::Masker) masks when the host adds
//! nothing.
//!
//! The checklist is a secret scanner's (gitleaks' rule list: cloud, VCS, package registries,
//! payment, chat, AI providers, JWTs, private keys), plus key-value assignments, `Authorization:`
//! headers and credentials in URLs. Each pattern says which literals (its *triggers*) every match
//! contains, and where: a match starts `back` bytes before a trigger (0 for a prefix such as
//! `sk_live_`). The masker finds all triggers in one Aho-Corasick pass and runs a pattern's regex
//! only where one of its triggers puts a match start; a test checks that this finds exactly what
//! running every regex over the whole text finds.
//!
//! Rules for writing a pattern here:
//! - Word boundaries are written `(?-u:\b)` (ASCII): a Unicode `\b` makes the lazy DFA that
//!   decides what a stream holds back give up on non-ASCII text.
//! - A capture group named `secret` masks only that group (`password=[masked]`,
//!   `https://deploy:[masked]@host`); otherwise the whole match is masked.
//! - Every match must contain one of the triggers at `back` bytes from its start (case-insensitive
//!   triggers with `ignore_case`), and a pattern must not match empty text.
//! - Ordinary code stays readable: `let token = parse(x)`, `token: Option<String>`,
//!   `max_tokens: 1024` are not secrets (tests check each family's near miss).

/// A built-in pattern and the literals that locate its matches.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinPattern {
    /// What it detects (shown in tests and docs).
    pub name: &'static str,
    /// The regex (Rust `regex` syntax).
    pub regex: &'static str,
    /// Every match contains one of these, starting `back.0..=back.1` bytes after the match start.
    pub triggers: &'static [&'static str],
    /// The triggers are compared ignoring ASCII case.
    pub ignore_case: bool,
    /// How far before a trigger a match may start.
    pub back: (usize, usize),
}

const fn prefixed(name: &'static str, regex: &'static str, triggers: &'static [&'static str]) -> BuiltinPattern {
    BuiltinPattern { name, regex, triggers, ignore_case: false, back: (0, 0) }
}

const fn any_case(name: &'static str, regex: &'static str, triggers: &'static [&'static str]) -> BuiltinPattern {
    BuiltinPattern { name, regex, triggers, ignore_case: true, back: (0, 0) }
}

const fn after(
    name: &'static str,
    regex: &'static str,
    triggers: &'static [&'static str],
    back: (usize, usize),
) -> BuiltinPattern {
    BuiltinPattern { name, regex, triggers, ignore_case: false, back }
}

/// The words that name a secret in a key-value pair (the key may end a longer name:
/// `DB_PASSWORD`, `client_secret`, `GITHUB_TOKEN`).
const KEY_WORD_TRIGGERS: &[&str] =
    &["passw", "passphrase", "secret", "token", "api", "access", "private", "credential"];

/// The built-in patterns.
pub const BUILTIN_PATTERNS: &[BuiltinPattern] = &[
    // ── Private keys ────────────────────────────────────────────────────────────────────────
    // PEM and PGP private key blocks (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP PRIVATE KEY BLOCK), also
    // inside JSON with `\n` escapes (a GCP service-account file's `private_key`). An unterminated
    // block masks everything after BEGIN.
    prefixed(
        "private_key_block",
        r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[\s\S]*)",
        &["-----BEGIN"],
    ),
    prefixed("age_secret_key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", &["AGE-SECRET-KEY-1"]),
    // ── Key-value pairs, headers, URLs, JWTs ────────────────────────────────────────────────
    // `password: "x"`, `"token": "x"`, `API_KEY = 'x'`: a quoted value of any length.
    any_case(
        "quoted_secret_pair",
        r#"(?i)(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)["']?[ \t]{0,5}[:=][ \t]{0,5}(?P<secret>"[^"\r\n]+"|'[^'\r\n]+')"#,
        KEY_WORD_TRIGGERS,
    ),
    // `password=hunter22`, `secret: …` with an unquoted value of at least 8 characters. `=` must
    // be unspaced here (spaced assignments are the next pattern) and brackets end the value (so
    // `token: Option<String>` is not a secret).
    any_case(
        "bare_secret_pair",
        r#"(?i)(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)["']?(?:=|:[ \t]{0,5})(?P<secret>[^\s"'`,;(){}\[\]<>]{8,})"#,
        KEY_WORD_TRIGGERS,
    ),
    // `password = s3cr3t-value` as in INI files, `.my.cnf`, `.pypirc`, `~/.aws/credentials`: a
    // spaced `=` whose unquoted value (8+ characters, no brackets or quotes) is the rest of the
    // line (an ` # comment` may follow). So `let token = parse(x);` stays readable; a plain
    // `token = other.name` line is masked.
    any_case(
        "spaced_secret_assignment",
        r#"(?im)(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?)[ \t]*=[ \t]*(?P<secret>[^\s"'`,;(){}\[\]<>]{8,})[ \t]*(?:[ \t]#[^\r\n]*)?\r?$"#,
        KEY_WORD_TRIGGERS,
    ),
    // `Authorization: Bearer <token>`, `Authorization: Basic <base64>`, `"authorization": "token x"`:
    // the credential after the scheme.
    any_case(
        "authorization_header",
        r#"(?i)authorization["']?[ \t]*[:=][ \t]*["']?(?:(?:bearer|basic|token|bot|digest|apikey|sso-key)[ \t]+)?(?P<secret>[A-Za-z0-9._~+/=:-]{8,})"#,
        &["authorization"],
    ),
    // `Bearer <token>` anywhere (curl lines, logs): 20+ token characters.
    any_case("bearer_token", r"(?i)(?-u:\b)bearer[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{20,}=*)", &["bearer"]),
    // A JSON Web Token: base64url header and payload (both JSON objects: `eyJ`), then a signature.
    prefixed("jwt", r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", &["eyJ"]),
    // `scheme://user:password@host`: only the password is masked.
    prefixed("url_credentials", r#"://[^\s/?#@:'"<>]*:(?P<secret>[^\s/?#@'"<>]+)@"#, &["://"]),
    // ── AI providers ────────────────────────────────────────────────────────────────────────
    // Anthropic (`sk-ant-…`) and OpenAI (`sk-…`, `sk-proj-…`, `sk-svcacct-…`) keys.
    prefixed("openai_anthropic_key", r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}", &["sk-"]),
    prefixed("groq_key", r"(?-u:\b)gsk_[A-Za-z0-9]{48,}", &["gsk_"]),
    prefixed("replicate_token", r"(?-u:\b)r8_[A-Za-z0-9]{30,}", &["r8_"]),
    prefixed("huggingface_token", r"(?-u:\b)(?:hf_|api_org_)[A-Za-z0-9]{30,}", &["hf_", "api_org_"]),
    prefixed("perplexity_key", r"(?-u:\b)pplx-[A-Za-z0-9]{40,}", &["pplx-"]),
    prefixed("xai_key", r"(?-u:\b)xai-[A-Za-z0-9]{70,}", &["xai-"]),
    // ── Version control and CI ──────────────────────────────────────────────────────────────
    // GitHub: personal (ghp_), OAuth (gho_), user/server (ghu_, ghs_), refresh (ghr_), fine-grained.
    prefixed(
        "github_token",
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
    ),
    // GitLab: personal/deploy/feed/mail/trigger/runner/CI-job/SCIM/feature-flag/OAuth/agent
    // tokens, and runner registration tokens.
    prefixed(
        "gitlab_token",
        r"(?-u:\b)(?:(?:glpat|gldt|glft|glimt|glptt|glrt|glcbt|glsoat|glffct|gloas|glagent|glwt)-[A-Za-z0-9_-]{20,}|GR1348941[A-Za-z0-9_-]{20,})",
        &[
            "glpat-",
            "gldt-",
            "glft-",
            "glimt-",
            "glptt-",
            "glrt-",
            "glcbt-",
            "glsoat-",
            "glffct-",
            "gloas-",
            "glagent-",
            "glwt-",
            "GR1348941",
        ],
    ),
    prefixed(
        "atlassian_token",
        r"(?-u:\b)(?:(?:ATATT3|ATCTT3)[A-Za-z0-9_=-]{20,}|ATBB[A-Za-z0-9]{28,})",
        &["ATATT3", "ATCTT3", "ATBB"],
    ),
    prefixed("buildkite_token", r"(?-u:\b)bkua_[a-f0-9]{40}", &["bkua_"]),
    // ── Package registries ──────────────────────────────────────────────────────────────────
    prefixed("npm_token", r"(?-u:\b)npm_[A-Za-z0-9]{30,}", &["npm_"]),
    prefixed("pypi_token", r"(?-u:\b)pypi-AgE[A-Za-z0-9_-]{40,}", &["pypi-AgE"]),
    prefixed("docker_hub_token", r"(?-u:\b)dckr_pat_[A-Za-z0-9_-]{27,}", &["dckr_pat_"]),
    // ── Cloud ───────────────────────────────────────────────────────────────────────────────
    prefixed(
        "aws_access_key_id",
        r"(?-u:\b)(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
        &["A3T", "AKIA", "ASIA", "ABIA", "ACCA"],
    ),
    // `aws_secret_access_key = …`, `AWS_SESSION_TOKEN: "…"`: 40+ base64 characters.
    any_case(
        "aws_secret_in_assignment",
        r#"(?i)aws_?(?:secret_?(?:access_?)?key|session_?token)["']?[ \t]*[:=][ \t]*["']?(?P<secret>[A-Za-z0-9/+=]{40,})"#,
        &["aws"],
    ),
    // Azure storage / service bus connection strings (`AccountKey=…;`), SAS signatures (`sig=…`).
    any_case(
        "azure_account_key",
        r"(?i)(?:AccountKey|SharedAccessKey)[ \t]*=[ \t]*(?P<secret>[A-Za-z0-9+/]{20,}={0,2})",
        &["accountkey", "sharedaccesskey"],
    ),
    prefixed("azure_sas_signature", r"(?-u:\b)sig=(?P<secret>[A-Za-z0-9%+/]{20,}={0,2})", &["sig="]),
    // Azure AD client secrets: `xxx8Q~…` (the `Q~` is four characters in).
    after("azure_ad_client_secret", r"[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}", &["Q~"], (4, 4)),
    // Google API keys, OAuth client secrets and access tokens (service-account keys are PEM blocks).
    prefixed(
        "google_credential",
        r"(?-u:\b)(?:AIza[0-9A-Za-z_-]{35}|GOCSPX-[A-Za-z0-9_-]{28}|ya29\.[A-Za-z0-9_-]{30,})",
        &["AIza", "GOCSPX-", "ya29."],
    ),
    prefixed("digitalocean_token", r"(?-u:\b)do[opr]_v1_[a-f0-9]{64}", &["dop_v1_", "doo_v1_", "dor_v1_"]),
    prefixed("alibaba_access_key_id", r"(?-u:\b)LTAI[A-Za-z0-9]{20}", &["LTAI"]),
    prefixed("heroku_key", r"(?-u:\b)HRKU-[A-Za-z0-9_-]{40,}", &["HRKU-"]),
    prefixed("databricks_token", r"(?-u:\b)dapi[a-f0-9]{32}(?:-[0-9]+)?", &["dapi"]),
    prefixed("doppler_token", r"(?-u:\b)dp\.(?:pt|st|ct|sa|scim|audit)\.[A-Za-z0-9]{40,}", &["dp."]),
    prefixed("pulumi_token", r"(?-u:\b)pul-[a-f0-9]{40}", &["pul-"]),
    prefixed("vault_token", r"(?-u:\b)hv[sbr]\.[A-Za-z0-9_-]{24,}", &["hvs.", "hvb.", "hvr."]),
    after("terraform_cloud_token", r"(?-u:\b)[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}", &[".atlasv1."], (14, 14)),
    prefixed(
        "planetscale_token",
        r"(?-u:\b)pscale_(?:tkn|pw|oauth)_[A-Za-z0-9=._-]{32,}",
        &["pscale_tkn_", "pscale_pw_", "pscale_oauth_"],
    ),
    prefixed("supabase_key", r"(?-u:\b)(?:sbp_[a-f0-9]{40}|sb_secret_[A-Za-z0-9_-]{20,})", &["sbp_", "sb_secret_"]),
    prefixed(
        "grafana_token",
        r"(?-u:\b)(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,}={0,2})",
        &["glsa_", "glc_"],
    ),
    prefixed("new_relic_key", r"(?-u:\b)NRAK-[A-Z0-9]{27}", &["NRAK-"]),
    prefixed("sentry_token", r"(?-u:\b)sntry[su]_[A-Za-z0-9+/=_]{40,}", &["sntrys_", "sntryu_"]),
    // ── Payment and commerce ────────────────────────────────────────────────────────────────
    prefixed(
        "stripe_key",
        r"(?-u:\b)(?:(?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9+/=]{24,})",
        &["sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_", "whsec_"],
    ),
    prefixed("square_token", r"(?-u:\b)sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}", &["sq0atp-", "sq0csp-"]),
    prefixed("shopify_token", r"(?-u:\b)shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}", &["shpat_", "shpss_", "shpca_", "shppa_"]),
    // ── Messaging and chat ──────────────────────────────────────────────────────────────────
    prefixed(
        "slack_token",
        r"(?-u:\b)(?:xox[abeoprs]|xapp)-[A-Za-z0-9-]{10,}",
        &["xoxa-", "xoxb-", "xoxe-", "xoxo-", "xoxp-", "xoxr-", "xoxs-", "xapp-"],
    ),
    any_case(
        "slack_webhook",
        r"(?i)hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/+-]{20,})",
        &["hooks.slack.com/"],
    ),
    any_case(
        "discord_webhook",
        r"(?i)discord(?:app)?\.com/api/webhooks/[0-9]+/(?P<secret>[A-Za-z0-9_-]{20,})",
        &["discord"],
    ),
    // Discord bot tokens: base64 user id (starts M/N/O), `.`, 6-character timestamp, `.`, HMAC.
    after(
        "discord_bot_token",
        r"(?-u:\b)[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}",
        &["."],
        (24, 28),
    ),
    // Telegram bot tokens `123456789:AA…`: the part after the bot id is masked.
    after("telegram_bot_token", r"(?-u:\b)[0-9]{8,10}:(?P<secret>AA[A-Za-z0-9_-]{32,})", &[":AA"], (8, 10)),
    prefixed("twilio_api_key", r"(?-u:\b)SK[0-9a-fA-F]{32}(?-u:\b)", &["SK"]),
    prefixed("sendgrid_key", r"(?-u:\b)SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", &["SG."]),
    prefixed("mailgun_key", r"(?-u:\b)key-[0-9a-f]{32}", &["key-"]),
    after("mailchimp_key", r"(?-u:\b)[0-9a-f]{32}-us[0-9]{1,2}(?-u:\b)", &["-us"], (32, 32)),
    // ── Productivity and developer tools ────────────────────────────────────────────────────
    prefixed("linear_key", r"(?-u:\b)lin_(?:api|oauth)_[A-Za-z0-9]{40}", &["lin_api_", "lin_oauth_"]),
    prefixed("postman_key", r"(?-u:\b)PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}", &["PMAK-"]),
    prefixed("notion_token", r"(?-u:\b)ntn_[A-Za-z0-9]{40,}", &["ntn_"]),
    prefixed("figma_token", r"(?-u:\b)figd_[A-Za-z0-9_-]{40,}", &["figd_"]),
];
