//! Authentication sections: JWT (issuer discovery, scopes) and mTLS identities.

use super::*;

#[test]
fn jwt_with_the_issuer_alone_discovers_keys_and_maps_scopes() {
    let loaded = parse(&format!(
        r#"
listen = "127.0.0.1:9000"
[auth]
mode = "jwt"
[auth.jwt]
issuer = "https://idp.example.com/realms/acme"
resource_url = "https://relay.example.com"
groups_claim = "roles"
[auth.jwt.scopes]
"mcp:a" = ["a"]
"mcp:all" = ["*"]
{SH_TOOL}"#
    ))
    .expect("valid");
    let AuthConfig::Jwt(j) = &loaded.config.auth else {
        panic!("jwt");
    };
    assert!(matches!(j.keys, crate::auth::KeySource::Remote(_)));
    assert!(j.audience.is_empty());
    assert_eq!(j.resource.url.as_deref(), Some("https://relay.example.com"));
    let scopes = j.scopes.as_ref().expect("scopes");
    assert_eq!(scopes.granting("a"), ["mcp:a", "mcp:all"]);
    assert_eq!(j.groups_claim, "roles");
}

#[test]
fn jwt_problems_name_the_key() {
    let found = problems(&format!(
        r#"
[auth]
mode = "jwt"
[auth.jwt]
issuer = "http://idp.example.com"
resource_url = "https://relay.example.com/prefix"
scopes = {{ "mcp:a" = "a" }}
{SH_TOOL}"#
    ));
    let all = found.join("\n");
    assert!(
        all.contains("auth.jwt.issuer") && all.contains("not an https URL"),
        "{all}"
    );
    assert!(
        all.contains("auth.jwt.resource_url") && all.contains("not an origin"),
        "{all}"
    );
    assert!(all.contains("auth.jwt.scopes.mcp:a"), "{all}");
    let found = problems(
        "[auth]\nmode = \"jwt\"\n[auth.jwt]\njwks_file = \"x.json\"\njwks_url = \"https://i/k\"\n",
    );
    let all = found.join("\n");
    assert!(
        all.contains("auth.jwt.issuer") && all.contains("missing"),
        "{all}"
    );
    assert!(all.contains("not both"), "{all}");
}

#[test]
fn mtls_needs_a_client_ca_and_a_name_to_match() {
    let all = problems(&format!(
        "[auth]\nmode = \"mtls\"\n[[auth.cert]]\nuser = \"a\"\ntools = [\"a\"]\n{SH_TOOL}"
    ))
    .join("\n");
    assert!(
        all.contains("`subject_cn`") && all.contains("`san`"),
        "{all}"
    );
    let all = problems(&format!(
        "[auth]\nmode = \"mtls\"\n[[auth.cert]]\nuser = \"a\"\nsan = \"a@example.com\"\n{SH_TOOL}"
    ))
    .join("\n");
    assert!(all.contains("client_ca"), "{all}");
}

#[test]
fn on_revoke_is_end_or_next_call() {
    let hash = crate::auth::hash_token("alice-secret");
    let cfg = |v: &str| {
        format!(
            "[auth]\nmode = \"tokens\"\non_revoke = \"{v}\"\n[[auth.token]]\nuser = \"alice\"\n\
             sha256 = \"{hash}\"\ntools = [\"*\"]\n{SH_TOOL}"
        )
    };
    assert_eq!(
        parse(SH_TOOL).expect("valid").config.on_revoke,
        OnRevoke::End
    );
    assert_eq!(
        parse(&cfg("end")).expect("valid").config.on_revoke,
        OnRevoke::End
    );
    assert_eq!(
        parse(&cfg("next_call")).expect("valid").config.on_revoke,
        OnRevoke::NextCall
    );
    let found = problems(&cfg("later"));
    assert!(
        found
            .iter()
            .any(|p| p.contains("auth.on_revoke") && p.contains("\"next_call\"")),
        "{found:?}"
    );
}
