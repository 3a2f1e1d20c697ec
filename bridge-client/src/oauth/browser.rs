//! Opening the authorization URL: the command in `$BROWSER` when it is set (the Unix
//! convention: `:`-separated commands, `%s` standing for the URL, else the URL appended), else
//! the platform's opener. The URL is always printed on stderr as well, so a user can open it by
//! hand. The browser never sees our stdout (it belongs to the IDE's JSON-RPC).

use std::process::{Command, Stdio};

/// Prints `url` on stderr and tries to open it.
pub(super) fn open(url: &str) {
    eprintln!("bridge-client: to sign in, open this URL in a browser:\n\n    {url}\n");
    let candidates: Vec<Vec<String>> = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => b.split(':').map(|c| command(c, url)).collect(),
        _ => platform(url),
    };
    for argv in candidates {
        let Some((prog, args)) = argv.split_first() else {
            continue;
        };
        match Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                // Reap it whenever it ends; never wait for it here.
                std::thread::spawn(move || child.wait());
                return;
            }
            Err(e) => tracing::debug!("cannot start the browser {prog:?}: {e}"),
        }
    }
    eprintln!("bridge-client: no browser could be started; open the URL above by hand");
}

/// One `$BROWSER` entry as argv.
fn command(entry: &str, url: &str) -> Vec<String> {
    let mut argv: Vec<String> = entry.split_whitespace().map(str::to_owned).collect();
    if argv.iter().any(|a| a.contains("%s")) {
        for a in &mut argv {
            *a = a.replace("%s", url);
        }
    } else if !argv.is_empty() {
        argv.push(url.to_owned());
    }
    argv
}

fn platform(url: &str) -> Vec<Vec<String>> {
    let v = |p: &[&str]| {
        p.iter()
            .map(|s| s.to_string())
            .chain([url.to_owned()])
            .collect()
    };
    if cfg!(target_os = "macos") {
        vec![v(&["open"])]
    } else if cfg!(target_os = "windows") {
        vec![v(&["rundll32", "url.dll,FileProtocolHandler"])]
    } else {
        vec![v(&["xdg-open"]), v(&["gio", "open"])]
    }
}

#[cfg(test)]
mod tests {
    use super::command;

    #[test]
    fn browser_entries() {
        assert_eq!(
            command("firefox --new-tab", "U"),
            ["firefox", "--new-tab", "U"]
        );
        assert_eq!(command("lynx %s -dump", "U"), ["lynx", "U", "-dump"]);
        assert!(command("  ", "U").is_empty());
    }
}
