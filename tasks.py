"""The platform's task runner: a table of contents. `invoke --list` shows every task;
`invoke --help TASK` its options. The work lives in fedops/ (plain, tested Python)."""
from invoke import Collection

from fedops.tasks import backup, bench, ca, dev, fl, hosts, identity, images, secrets, stack

ns = Collection()
# The most used, at the top: invoke up / down / status / logs / test / bench
for t in (stack.up, stack.down, stack.status_, stack.logs, stack.config_, dev.test, bench.bench,
          hosts.hosts, backup.backup, backup.restore):
    ns.add_task(t)
ns.add_collection(Collection.from_module(ca, name="ca"))
ns.add_collection(Collection.from_module(secrets, name="secrets"))
ns.add_collection(Collection.from_module(images, name="images"))
ns.add_collection(Collection.from_module(fl, name="fl"))
ns.add_collection(Collection.from_module(identity, name="identity"))
