/*
 * pecctl_help.c - `pecctl help [COMMAND]` and `pecctl COMMAND --help`: one
 * table with every command and every option, so the overview, each
 * command's help and docs/man/pecctl.8.scd say the same (a test compares
 * them: tests/integration/test_pecctl_scripting.py).
 *
 *   pecctl_help(f, NULL)    the overview (every command, every option)
 *   pecctl_help(f, "init")  one command; -1 when unknown
 */
#include <stdio.h>
#include <string.h>

struct help {
    const char *name;
    const char *text;
};

static const struct help helps[] = {
    {"init",
     "pecctl init DIR --domain DOMAIN [--name NAME] [--smtp PORT] [--submission PORT]\n"
     "            [--submissions PORT] [--ca CADIR] [--directory FILE.ldif]\n"
     "            [--route DOMAIN=HOST:PORT[,HOST:PORT...]]... [--force]\n"
     "    create a ready-to-run provider instance in DIR\n"
     "    --name NAME           provider name (providerName, certificate O); default DOMAIN\n"
     "    --smtp PORT           [mx] listener on 127.0.0.1 (default 2525)\n"
     "    --submission PORT     [submission] listener on 127.0.0.1 (default 2587)\n"
     "    --submissions PORT    also an implicit-TLS [submissions] listener\n"
     "    --ca CADIR            test CA, created if absent, else reused (default DIR/ca)\n"
     "    --directory FILE      providers' directory shared with other local providers\n"
     "    --route D=HOST:PORT[,HOST:PORT...]\n"
     "                          static next hops for domain D, tried in turn (repeatable)\n"
     "    --force               replace an existing DIR/pecd.conf\n"},
    {"user",
     "pecctl -c CONF user add ADDRESS [--password-stdin]\n"
     "pecctl -c CONF user del ADDRESS\n"
     "pecctl -c CONF user list [--json]\n"
     "pecctl -c CONF user passwd ADDRESS [--password-stdin]\n"
     "pecctl -c CONF user suspend|resume ADDRESS\n"
     "pecctl -c CONF user show ADDRESS\n"
     "    add: create a mailbox user (a generated password is printed unless\n"
     "         --password-stdin); del: remove a user (the Maildir is kept);\n"
     "    passwd: a new password; suspend: no login (mail is still delivered)\n"
     "    until resume; show: a user's state, quota and mailbox\n"
     "    --json                list: a JSON array of {\"address\"}\n"},
    {"queue",
     "pecctl -c CONF queue [--json]\n"
     "pecctl -c CONF queue release QID\n"
     "    list the queued messages (! = on hold); an instance never started has an\n"
     "    empty queue; release: retry a held message now\n"
     "    --json                a JSON array of {\"qid\", \"hold\", \"size\", \"arrival\",\n"
     "                          \"sender\", \"recipients\"}\n"},
    {"route",
     "pecctl -c CONF route list [--json]\n"
     "pecctl -c CONF route add DOMAIN [lmtp:]HOST:PORT[,HOST:PORT...]\n"
     "pecctl -c CONF route del DOMAIN\n"
     "    the static next hops of [routes]; add and del edit pecd.conf in place\n"
     "    (comments kept, the result checked before it replaces the file) and take\n"
     "    effect on the next reload (systemctl reload pecmail)\n"
     "    --json                list: a JSON array of {\"domain\", \"next_hop\"}\n"},
    {"state",
     "pecctl -c CONF state init\n"
     "pecctl -c CONF state migrate\n"
     "    the schema of [state] database = postgresql://... (several nodes): init\n"
     "    creates it in an empty database, migrate upgrades one of an older pecmail\n"
     "    (once for every node; pecd refuses to start until it is done)\n"},
    {"nodes",
     "pecctl -c CONF nodes [--json]\n"
     "    the nodes of the provider the database knows: alive, dead or waiting for\n"
     "    its spool, last heartbeat, who holds each spool's lease (epoch, time left),\n"
     "    queued and held messages\n"
     "    --json                a JSON array of {\"node\", \"number\", \"state\", \"alive\",\n"
     "                          \"heartbeat\", \"heartbeat_age\", \"host\", \"pid\",\n"
     "                          \"queue_dir\", \"spool_owner\", \"epoch\", \"lease_left\",\n"
     "                          \"queued\", \"held\"}\n"},
    {"node",
     "pecctl node add NEWDIR --from DIR --node NAME --smtp HOST:PORT\n"
     "                --submission HOST:PORT [--submissions HOST:PORT] [--force]\n"
     "    another node of the provider in DIR (whose pecd.conf has [state] database):\n"
     "    the same identity, keys, certificates, directory, users, mailboxes and\n"
     "    [state]; its own name, listeners, queue and data directory (NEWDIR)\n"
     "    --from DIR            the directory of an existing node's pecd.conf\n"
     "    --node NAME           the new node's [state] node (a-z 0-9 . - _)\n"
     "    --smtp HOST:PORT      its [mx] listener\n"
     "    --submission HOST:PORT  its [submission] listener\n"
     "    --submissions HOST:PORT its [submissions] listener (else DIR's, if any)\n"
     "    --force               replace an existing NEWDIR/pecd.conf\n"},
    {"backup",
     "pecctl -c CONF backup DIR [--no-mail] [--include-keys]\n"
     "pecctl -c CONF restore DIR [--force]\n"
     "    backup: a consistent copy of the instance into the new directory DIR while\n"
     "    pecd runs (spool and tracking database by pecd between two batches, then\n"
     "    the evidence log, the files pecd.conf names, the Maildirs in the data\n"
     "    directory) with a MANIFEST of checksums; private keys only with\n"
     "    --include-keys.  restore: checks DIR, refuses beside a running pecd or\n"
     "    over existing state (--force moves it aside), restores pecd.conf first\n"
     "    when CONF does not exist (docs/backup.md)\n"
     "    --no-mail             leave the Maildirs out\n"},
    {"restore", "pecctl -c CONF restore DIR [--force]\n    see pecctl help backup\n"},
    {"domain",
     "pecctl -c CONF domain list [--json]\n"
     "    the local domains ([provider] domain, local_domains, local_domains_file)\n"
     "    and each one's settings, as pecd would load them now\n"
     "    --json                a JSON array of {\"domain\", \"messages_per_hour\",\n"
     "                          \"recipients_per_hour\", \"receipt\", \"callouts\",\n"
     "                          \"tls_certificate\"}\n"},
    {"verify",
     "pecctl verify [--json] [--trust CAFILE]... [--crl CRLFILE]...\n"
     "              [--directory FILE.ldif|ldap://HOST:PORT/BASE] [--directory-ca CAFILE]\n"
     "              [--directory-bind-dn DN --directory-password-file FILE]\n"
     "              [--at UNIXTIME] FILE.eml...\n"
     "    classify and check PEC messages; exit 0 valid, 1 invalid, 2 unreadable\n"
     "    --json                one JSON object per file\n"},
    {"log",
     "pecctl -c CONF log verify [--cert FILE | --no-cert] [--json] [FILE]\n"
     "pecctl -c CONF log seal\n"
     "pecctl -c CONF log purge\n"
     "pecctl -c CONF log search --address ADDR [--from YYYY-MM-DD] [--to YYYY-MM-DD]\n"
     "                          [--subject TEXT] [--json]\n"
     "pecctl -c CONF log extract --address ADDR [--from YYYY-MM-DD] [--to YYYY-MM-DD]\n"
     "                           [--subject TEXT] --out FILE\n"
     "pecctl -c CONF log hold add --address ADDR | --pec-id ID [--reason TEXT]\n"
     "pecctl -c CONF log hold list [--json]\n"
     "pecctl -c CONF log hold del ID\n"
     "pecctl -c CONF log export --day YYYY-MM-DD [--out FILE]\n"
     "    verify: the evidence log's hash chain and day seals; exit 0 intact,\n"
     "    1 tampered, 2 unreadable; purge: records past [evidence] retention,\n"
     "    except those under a legal hold; search: a user's transactions;\n"
     "    extract: their records in a file signed with the provider's key (CMS);\n"
     "    export: a sealed day as a file of its own (default evidence-DAY.db), for\n"
     "    write-once storage (the shared log: every node's chain of the day);\n"
     "    verify FILE checks such a file (or a copy of a log),\n"
     "    without pecd.conf when --cert names the signing certificate\n"
     "    --json                verify: {\"path\", \"result\", \"valid\", \"report\", \"error\"}\n"},
    {"report",
     "pecctl -c CONF report --from YYYY-MM-DD --to YYYY-MM-DD [--json|--csv]\n"
     "    mailboxes, PEC messages taken in and delivered, receipts and anomalies, per day\n"},
    {"trace",
     "pecctl -c CONF trace MESSAGE-ID [--json]\n"
     "    the life of a PEC message in the evidence log\n"
     "    --json                {\"id\", \"events\": [...]}\n"},
    {"directory",
     "pecctl -c CONF directory list [--cache] [--json]\n"
     "pecctl -c CONF directory export [--cache]\n"
     "pecctl -c CONF directory import FILE.ldif|FILE.p7m\n"
     "pecctl -c CONF directory refresh\n"
     "pecctl -c CONF directory publish OUT.p7m\n"
     "    the providers' directory\n"
     "    --json                list: {\"providers\": [...], \"count\", \"records\"}\n"},
    {"pki",
     "pecctl pki ca DIR [--name NAME] [--days N]\n"
     "pecctl pki issue --ca DIR --domain DOMAIN --out DIR [--name ORG] [--days N]\n"
     "                 [--tls-host HOST]...\n"
     "pecctl pki revoke --ca DIR [--reason keyCompromise|...] CERT.pem\n"
     "pecctl pki crl --ca DIR\n"
     "pecctl pki hash CERT.pem\n"
     "    a test PKI (CA, signing and TLS certificates, CRL)\n"},
    {"help", "pecctl help [COMMAND]\n    this text, or one command's\n"},
};

int pecctl_help(FILE *f, const char *cmd)
{
    if (cmd == NULL) {
        fprintf(f, "usage: pecctl [-c pecd.conf] COMMAND ...   (-c: default "
                   "/etc/pecmail/pecd.conf)\n\n");
        for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
            fprintf(f, "%s\n", helps[i].text);
        return 0;
    }
    for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++) {
        if (strcmp(helps[i].name, cmd) == 0) {
            fprintf(f, "%s", helps[i].text);
            return 0;
        }
    }
    return -1;
}
