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
/// `DB_PASSWORD`, `client_secret`, `GITHUB_TOKEN`, `SECRET_KEY`, `DB_PASS`, `MYSQL_PWD`).
const KEY_WORD_TRIGGERS: &[&str] = &[
    "passw",
    "passphrase",
    "secret",
    "token",
    "credential",
    "_pass",
    "-pass",
    "_pwd",
    "-pwd",
    "api_key",
    "api-key",
    "apikey",
    "access_key",
    "access-key",
    "accesskey",
    "private_key",
    "private-key",
    "privatekey",
    "app_key",
    "app-key",
    "appkey",
    "application_key",
    "application-key",
    "applicationkey",
    "encryption_key",
    "encryption-key",
    "encryptionkey",
    "master_key",
    "master-key",
    "masterkey",
    "signing_key",
    "signing-key",
    "signingkey",
    "admin_key",
    "admin-key",
    "adminkey",
    "license_key",
    "license-key",
    "licensekey",
    "auth_key",
    "auth-key",
    "authkey",
    "client_key",
    "client-key",
    "clientkey",
    "account_key",
    "account-key",
    "accountkey",
    "service_key",
    "service-key",
    "servicekey",
    "consumer_key",
    "consumer-key",
    "consumerkey",
];

/// The key names of [`KEY_WORD_TRIGGERS`] as a regex (case-insensitive; `secret` also matches
/// `secret_key` through the `…key` alternative).
macro_rules! key_name {
    () => {
        r"(?:passw(?:or)?d|passphrase|secret|token|credentials?|[_-](?:pass|pwd)|(?:api|access|private|secret|app|application|encryption|master|signing|admin|license|auth|client|account|service|consumer)[_-]?key)"
    };
}

/// What separates a key from its value: an optional closing quote of the key, then `=`, `:`,
/// `=>` or `:=`, spaces or tabs around it.
macro_rules! key_separator {
    () => {
        r#"["']?[ \t]*(?:=>|:=|[:=])[ \t]*"#
    };
}

/// An unquoted value that looks like a credential: 8+ characters without whitespace, quotes or
/// brackets (`[^\s"'`,;(){}\[\]<>]`), containing at least one character other than a letter,
/// `_`, `.` or `-` (a digit or a symbol, as gitleaks' generic rule requires; so identifiers,
/// paths such as `args.password` and types such as `SecretKey` are not secrets), not starting
/// with `$ : = & * % ~` (shell variables, `::` paths, references), and followed by whitespace,
/// a quote, `,`, `;`, a closing bracket or the end of the line (so `parse(x)`,
/// `Option<String>` and `link.token.clone()` are calls and types, not values).
macro_rules! credential_value {
    () => {
        concat!(
            r#"(?-i:(?P<secret>(?:"#,
            r#"[A-Za-z_.-]{7,}[^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]*"#,
            r#"|[^\sA-Za-z_.\-"'`,;(){}\[\]<>$:=&*%~][^\s"'`,;(){}\[\]<>]{7,}"#,
            r#"|[A-Za-z_.-][^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]{6,}"#,
            r#"|[A-Za-z_.-]{2}[^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]{5,}"#,
            r#"|[A-Za-z_.-]{3}[^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]{4,}"#,
            r#"|[A-Za-z_.-]{4}[^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]{3,}"#,
            r#"|[A-Za-z_.-]{5}[^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]{2,}"#,
            r#"|[A-Za-z_.-]{6}[^\sA-Za-z_.\-"'`,;(){}\[\]<>][^\s"'`,;(){}\[\]<>]+"#,
            r#")))(?:[\s"'`,;)}\]>]|$)"#
        )
    };
}

/// A token68 credential after an `Authorization:` scheme: a first character, then 7+ more of
/// which one (after the first) is an uppercase letter, a digit or one of `._~+/=-` (so the prose
/// word in "Authorization: Basic followed by base64" is not a credential).
macro_rules! token68 {
    () => {
        concat!(
            r"(?-i:(?P<secret>[A-Za-z0-9._~+/=-](?:",
            r"[a-z]{6,}[A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]*",
            r"|[A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]{6,}",
            r"|[a-z][A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]{5,}",
            r"|[a-z]{2}[A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]{4,}",
            r"|[a-z]{3}[A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]{3,}",
            r"|[a-z]{4}[A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]{2,}",
            r"|[a-z]{5}[A-Z0-9._~+/=-][A-Za-z0-9._~+/=-]+",
            r")))"
        )
    };
}

/// A line break in a key block: a real one, or `\n` / `\r\n` escapes inside a JSON string.
macro_rules! key_block_newline {
    () => {
        r"(?:\r?\n|\\r\\n|\\n)"
    };
}

/// The built-in patterns.
pub const BUILTIN_PATTERNS: &[BuiltinPattern] = &[
    // ── Private keys ────────────────────────────────────────────────────────────────────────
    // PEM and PGP private key blocks (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP PRIVATE KEY BLOCK), also
    // inside JSON with `\n` escapes (a GCP service-account file's `private_key`): the BEGIN line,
    // the lines of key material after it (base64, blank, or PEM/PGP header lines such as
    // `Proc-Type: …`), and the END line. Without an END line, the block ends after the last line
    // of key material: the first other line (prose, code) is not part of it, so a lone BEGIN
    // line hides nothing after it (the masker says so: `[masked: private key block without an
    // END line]`).
    prefixed(
        "private_key_block",
        concat!(
            r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:",
            key_block_newline!(),
            r"[ \t]*(?:[A-Za-z0-9+/=]+|(?:Proc-Type|DEK-Info|Comment|Version|Hash|Charset):[^\r\n\\]*)?[ \t]*)*(?:",
            key_block_newline!(),
            r#"[ \t]*-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\r?(?m:$)|\\[nr]|")"#
        ),
        &["-----BEGIN"],
    ),
    prefixed("age_secret_key", r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", &["AGE-SECRET-KEY-1"]),
    // ── Key-value pairs, headers, URLs, JWTs ────────────────────────────────────────────────
    // `password: "x"`, `"token": "x"`, `API_KEY = 'x'`, `'password' => 'x'`: a quoted value of 6+
    // characters after a password-like key, 8+ after the others (so `token: "bench".into()`
    // stays readable). Templates (`"${X}"`, `"{{ x }}"`, `"<your key>"`, `"%s"`) are not values.
    any_case(
        "quoted_password_pair",
        concat!(
            r#"(?i)(?:passw(?:or)?d|passphrase|[_-](?:pass|pwd))"#,
            key_separator!(),
            r#"(?P<secret>"[^"\r\n$<{%][^"\r\n]{5,}"|'[^'\r\n$<{%][^'\r\n]{5,}')"#
        ),
        KEY_WORD_TRIGGERS,
    ),
    any_case(
        "quoted_secret_pair",
        concat!(
            "(?i)",
            key_name!(),
            key_separator!(),
            r#"(?P<secret>"[^"\r\n$<{%][^"\r\n]{7,}"|'[^'\r\n$<{%][^'\r\n]{7,}')"#
        ),
        KEY_WORD_TRIGGERS,
    ),
    // `password=hunter22`, `secret: s3cr3t!`, `DB_PASSWORD = x9…  # prod`, `export API_KEY=…`: an
    // unquoted value that looks like a credential (see `credential_value!`). So
    // `let password = args.password;`, `token: Option<String>`, `secret_key: SecretKey`,
    // `token: link.token.clone()` and `token::generate(&mut rng)` stay readable.
    any_case(
        "bare_secret_pair",
        concat!("(?im)", key_name!(), key_separator!(), credential_value!()),
        KEY_WORD_TRIGGERS,
    ),
    // PHP `define('DB_PASSWORD', '…')` (WordPress' `AUTH_KEY`, `SECURE_AUTH_SALT`, … too).
    any_case(
        "php_define_secret",
        r#"(?i)define\([ \t]*["'][A-Z0-9_]*(?:PASS|PWD|SECRET|KEY|TOKEN|SALT)[A-Z0-9_]*["'][ \t]*,[ \t]*(?P<secret>'[^'\r\n$<{%][^'\r\n]{5,}'|"[^"\r\n$<{%][^"\r\n]{5,}")"#,
        &["define("],
    ),
    // NuGet `<add key="ClearTextPassword" value="…" />`.
    any_case(
        "nuget_password",
        r#"(?i)key=["'](?:ClearText)?Password["'][ \t]+value=["'](?P<secret>[^"'\r\n$<{%][^"'\r\n]{5,})"#,
        &["key="],
    ),
    // Docker `config.json` `"auth": "<base64 user:password>"`, `.npmrc` `_auth=<base64>`.
    any_case(
        "docker_npm_auth",
        r#"(?i)(?:"auth"[ \t]*:[ \t]*"|(?-u:\b)_auth[ \t]*=[ \t]*)(?P<secret>[A-Za-z0-9+/]{8,}={0,2})"#,
        &["\"auth\"", "_auth"],
    ),
    // `curl -u user:password`, `curl --user=user:password` (also on `\`-continued lines).
    prefixed(
        "curl_user_password",
        r#"(?-u:\b)curl(?:[ \t](?:[^\r\n]|\\\r?\n)*?)?[ \t](?:-u|--user)(?:=|[ \t]{1,5})["']?[^\s:"']+:(?P<secret>[^\s"'`]{3,})"#,
        &["curl"],
    ),
    // `Authorization: Bearer <token>`, `Authorization: Basic <base64>`, `Authorization: SSWS …`,
    // `"authorization": "token x"`: the credential after any scheme word (see `token68!`).
    any_case(
        "authorization_header",
        concat!(r#"(?i)authorization["']?[ \t]*[:=][ \t]*["']?(?:[A-Za-z][A-Za-z0-9_-]*[ \t]+)?"#, token68!()),
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
        r"(?-u:\b)(?:(?:glpat|gldt|glft|glimt|glptt|glrt|glcbt|glsoat|glffct|gloas|glagent|glwt)-[A-Za-z0-9_-]{20,}(?:\.[0-9a-z]{9}(?-u:\b))?|GR1348941[A-Za-z0-9_-]{20,})",
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
        // No word boundary: `mysql -p<password>` puts the password right after `-p`.
        r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9=._-]{32,}",
        &["pscale_tkn_", "pscale_pw_", "pscale_oauth_"],
    ),
    prefixed("supabase_key", r"(?-u:\b)(?:sbp_[a-f0-9]{40}|sb_secret_[A-Za-z0-9_-]{20,})", &["sbp_", "sb_secret_"]),
    prefixed(
        "grafana_token",
        r"(?-u:\b)(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,}={0,2})",
        &["glsa_", "glc_"],
    ),
    prefixed(
        "new_relic_key",
        r"(?-u:\b)(?:NRAK-[A-Za-z0-9]{27}|NRII-[A-Za-z0-9-]{32}|NRJS-[a-f0-9]{19}|NRAA-[A-Za-z0-9]{27})",
        &["NRAK-", "NRII-", "NRJS-", "NRAA-"],
    ),
    prefixed("sentry_token", r"(?-u:\b)sntry[su]_[A-Za-z0-9+/=_]{40,}", &["sntrys_", "sntryu_"]),
    // ── Payment and commerce ────────────────────────────────────────────────────────────────
    prefixed(
        "stripe_key",
        r"(?-u:\b)(?:(?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9+/=]{24,})",
        &["sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_", "whsec_"],
    ),
    prefixed(
        "square_token",
        r"(?-u:\b)(?:sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}|EAAA[A-Za-z0-9_-]{22,})",
        &["sq0atp-", "sq0csp-", "EAAA"],
    ),
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
    // No word boundary before the id: in `api.telegram.org/bot<id>:<token>/` it follows `bot`.
    after("telegram_bot_token", r"[0-9]{5,16}:(?P<secret>A[A-Za-z0-9_-]{32,})", &[":A"], (5, 16)),
    prefixed("twilio_api_key", r"(?-u:\b)SK[0-9a-fA-F]{32}(?-u:\b)", &["SK"]),
    prefixed("sendgrid_key", r"(?-u:\b)SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", &["SG."]),
    prefixed("mailgun_key", r"(?-u:\b)key-[0-9a-f]{32}", &["key-"]),
    after("mailchimp_key", r"(?-u:\b)[0-9a-f]{32}-us[0-9]{1,2}(?-u:\b)", &["-us"], (32, 32)),
    // ── Productivity and developer tools ────────────────────────────────────────────────────
    prefixed("linear_key", r"(?-u:\b)lin_(?:api|oauth)_[A-Za-z0-9]{40}", &["lin_api_", "lin_oauth_"]),
    prefixed("postman_key", r"(?-u:\b)PMAK-[a-fA-F0-9]{24}-[a-fA-F0-9]{34}", &["PMAK-"]),
    prefixed("notion_token", r"(?-u:\b)ntn_[A-Za-z0-9]{40,}", &["ntn_"]),
    prefixed("figma_token", r"(?-u:\b)figd_[A-Za-z0-9_-]{40,}", &["figd_"]),
    // ── Issue 24: the families gitleaks' default rules catch that leaked ─────────────────────
    prefixed("gitlab_session_cookie", r"_gitlab_session=(?P<secret>[0-9a-z]{32,})", &["_gitlab_session="]),
    prefixed("sourcegraph_token", r"(?-u:\b)sg[ps]_[A-Za-z0-9_]{40,}", &["sgp_", "sgs_"]),
    // SonarQube project / user / global analysis tokens, and `-Dsonar.login=…`, `SONAR_TOKEN: …`.
    prefixed("sonarqube_token", r"(?-u:\b)sq[pua]_[a-fA-F0-9]{40}", &["sqp_", "squ_", "sqa_"]),
    any_case(
        "sonar_login",
        r#"(?i)sonar[_.-]?(?:login|token)[\w.-]{0,20}["']?[ \t]*(?:=>|:=|[:=,])[ \t"'=]{0,5}(?P<secret>[A-Za-z0-9=_-]{20,})"#,
        &["sonar"],
    ),
    prefixed("artifactory_key", r"(?-u:\b)(?:AKCp[A-Za-z0-9]{69}|cmVmd[A-Za-z0-9]{59})(?-u:\b)", &["AKCp", "cmVmd"]),
    prefixed("octopus_deploy_key", r"(?-u:\b)API-[A-Z0-9]{26}(?-u:\b)", &["API-"]),
    any_case("clojars_token", r"(?i)CLOJARS_[a-z0-9]{60}", &["clojars_"]),
    // AWS Bedrock API keys: long-lived `ABSK…` (base64 of `BedrockAPIKey-…`), short-lived
    // `bedrock-api-key-…`.
    prefixed(
        "aws_bedrock_key",
        r"(?-u:\b)(?:ABSK[A-Za-z0-9+/]{100,}={0,2}|bedrock-api-key-[A-Za-z0-9+/]{40,}={0,2})",
        &["ABSK", "bedrock-api-key-"],
    ),
    prefixed("cloudflare_origin_ca_key", r"(?-u:\b)v1\.0-[a-f0-9]{24}-[a-f0-9]{146}", &["v1.0-"]),
    prefixed(
        "flyio_token",
        r"(?-u:\b)(?:fo1_[\w-]{43}|fm1[ar]_[A-Za-z0-9+/]{100,}={0,3}|fm2_[A-Za-z0-9+/]{100,}={0,3})",
        &["fo1_", "fm1a_", "fm1r_", "fm2_"],
    ),
    // Keys named after a vendor whose keys have no prefix: Datadog API / application keys,
    // Algolia admin / API keys (`DATADOG_APP_KEY=…`, `algolia.adminKey: "…"`).
    any_case(
        "vendor_named_key",
        r#"(?i)(?:datadog|algolia)[\w.-]{0,30}["']?[ \t]*(?:=>|:=|[:=,])[ \t"'=]{0,5}(?P<secret>[A-Za-z0-9]{32,40})"#,
        &["datadog", "algolia"],
    ),
    prefixed("dynatrace_token", r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}", &["dt0c01."]),
    prefixed("openshift_token", r"(?-u:\b)sha256~[\w-]{43}", &["sha256~"]),
    prefixed("facebook_access_token", r"(?-u:\b)EAA[A-Za-z0-9]{100,}", &["EAA"]),
    prefixed("flutterwave_key", r"(?-u:\b)FLW(?:SECK|PUBK)(?:_TEST)?-[A-Za-z0-9]{12,}(?:-X)?", &["FLWSECK", "FLWPUBK"]),
    prefixed("shippo_token", r"(?-u:\b)shippo_(?:live|test)_[a-fA-F0-9]{40}", &["shippo_"]),
    prefixed("easypost_token", r"(?-u:\b)EZ[AT]K[A-Za-z0-9]{54}", &["EZAK", "EZTK"]),
    // Mailgun's newer private API and webhook signing keys `<32 hex>-<8 hex>-<8 hex>`, and public
    // validation keys `pubkey-…`.
    after("mailgun_new_key", r"(?-u:\b)[a-hA-H0-9]{32}-[a-hA-H0-9]{8}-[a-hA-H0-9]{8}(?-u:\b)", &["-"], (32, 32)),
    prefixed("mailgun_pubkey", r"(?-u:\b)pubkey-[a-f0-9]{32}", &["pubkey-"]),
    prefixed("brevo_key", r"(?-u:\b)x(?:keysib|smtpsib)-[a-f0-9]{64}-[A-Za-z0-9]{16}", &["xkeysib-", "xsmtpsib-"]),
    prefixed(
        "onepassword_secret",
        r"(?-u:\b)(?:ops_eyJ[A-Za-z0-9+/]{250,}={0,3}|A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5}(?-u:\b))",
        &["ops_eyJ", "A3-"],
    ),
    prefixed("prefect_token", r"(?-u:\b)pnu_[A-Za-z0-9]{36}", &["pnu_"]),
    prefixed("readme_token", r"(?-u:\b)rdme_[a-z0-9]{70}", &["rdme_"]),
    prefixed("typeform_token", r"(?-u:\b)tfp_[A-Za-z0-9_.=-]{59}", &["tfp_"]),
    prefixed("infracost_token", r"(?-u:\b)ico-[A-Za-z0-9]{32}", &["ico-"]),
    prefixed("frameio_token", r"fio-u-[A-Za-z0-9_=-]{64}", &["fio-u-"]),
    prefixed("scalingo_token", r"(?-u:\b)tk-us-[\w-]{48}", &["tk-us-"]),
    prefixed("duffel_token", r"duffel_(?:test|live)_[A-Za-z0-9_=-]{43}", &["duffel_"]),
    after("maxmind_license_key", r"(?-u:\b)[A-Za-z0-9]{6}_[A-Za-z0-9]{29}_mmk", &["_mmk"], (36, 36)),
    prefixed("adobe_client_secret", r"(?-u:\b)p8e-[A-Za-z0-9]{32}", &["p8e-"]),
    prefixed("harness_token", r"(?:pat|sat)\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{20}", &["pat.", "sat."]),
    prefixed("grafana_api_key", r"(?-u:\b)eyJrIjoi[A-Za-z0-9]{70,400}={0,3}", &["eyJrIjoi"]),
    prefixed("rubygems_token", r"(?-u:\b)rubygems_[a-f0-9]{48}", &["rubygems_"]),
    prefixed("settlemint_token", r"(?-u:\b)sm_(?:aat|pat|sat)_[A-Za-z0-9]{16}", &["sm_aat_", "sm_pat_", "sm_sat_"]),
    prefixed("clickhouse_cloud_key", r"(?-u:\b)4b1d[A-Za-z0-9]{38}(?-u:\b)", &["4b1d"]),
    prefixed("intra42_secret", r"(?-u:\b)s-s4t2(?:ud|af)-[a-f0-9]{64}", &["s-s4t2ud-", "s-s4t2af-"]),
    any_case(
        "teams_webhook",
        r"(?i)\.webhook\.office\.com/webhookb2/(?P<secret>[A-Za-z0-9@/-]{60,})",
        &[".webhook.office.com/webhookb2/"],
    ),
    any_case(
        "sidekiq_secret",
        r#"(?i)BUNDLE_(?:ENTERPRISE|GEMS)__CONTRIBSYS__COM["']?[ \t]*[:=][ \t"']*(?P<secret>[a-f0-9]{8}:[a-f0-9]{8})"#,
        &["bundle_enterprise__contribsys__com", "bundle_gems__contribsys__com"],
    ),
    // Facebook app access tokens `<app id>|<app secret>` (`%7C` when URL-encoded).
    after(
        "facebook_app_token",
        r"(?-u:\b)[0-9]{15,16}(?:\||%7C|%7c)(?P<secret>[0-9A-Za-z_-]{27,40})",
        &["|", "%7C", "%7c"],
        (15, 16),
    ),
];
