"""Real crontabs, verbatim, for the crontab import tests (unit, CLI and end-to-end).

DEBIAN_EXAMPLE: the EXAMPLE CRON FILE of crontab(5) as `man 5 crontab` prints it on recent Debian
and Ubuntu releases. DEBIAN_VIXIE_EXAMPLE: the older one that Debian 12's cron 3.0pl1-162 still
ships, from its troff source (which writes `\\%` as a crontab does; the printed page loses both
characters, troff reading them as a hyphenation mark). DEBIAN_ETC_CRONTAB: Debian 12's
/etc/crontab (package cron-daemon-common 3.0pl1-162), tabs included.
"""

from __future__ import annotations

DEBIAN_EXAMPLE = """\
# use /bin/bash to run commands, instead of the default /bin/sh
SHELL=/bin/bash
# mail any output to `paul', no matter whose crontab this is
MAILTO=paul
#
# run five minutes after midnight, every day
5 0 * * *       $HOME/bin/daily.job >> $HOME/tmp/out 2>&1
# run at 2:15pm on the first of every month — output mailed to paul
15 14 1 * *     $HOME/bin/monthly
# run at 10 pm on weekdays, annoy Joe
0 22 * * 1-5    mail -s "It's 10pm" joe%Joe,%%Where are your kids?%
23 0-23/2 * * * echo "run 23 minutes after midn, 2am, 4am ..., everyday"
5 4 * * sun     echo "run at 5 after 4 every Sunday"
0 */4 1 * mon   echo "run every 4th hour on the 1st and on every Monday"
0 0 */2 * sun   echo "run at midn on every Sunday that's an uneven date"
# Run on every second Saturday of the month
0 4 8-14 * *    test $(date +\\%u) -eq 6 && echo "2nd Saturday"
"""

DEBIAN_VIXIE_EXAMPLE = """\
# use /bin/sh to run commands, no matter what /etc/passwd says
SHELL=/bin/sh
# mail any output to `paul', no matter whose crontab this is
MAILTO=paul
#
# run five minutes after midnight, every day
5 0 * * *       $HOME/bin/daily.job >> $HOME/tmp/out 2>&1
# run at 2:15pm on the first of every month -- output mailed to paul
15 14 1 * *     $HOME/bin/monthly
# run at 10 pm on weekdays, annoy Joe
0 22 * * 1-5\tmail -s "It's 10pm" joe%Joe,%%Where are your kids?%
23 0-23/2 * * * echo "run 23 minutes after midn, 2am, 4am ..., everyday"
5 4 * * sun     echo "run at 5 after 4 every sunday"
# Run once every 9th day, even across week, month, and year boundaries:
33 22 * * *     expr $(date +\\%s) / 60 / 60 / 24 \\% 9 > /dev/null || echo Wax the floor.
"""

DEBIAN_ETC_CRONTAB = """\
# /etc/crontab: system-wide crontab
# Unlike any other crontab you don't have to run the `crontab'
# command to install the new version when you edit this file
# and files in /etc/cron.d. These files also have username fields,
# that none of the other crontabs do.

SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin

# Example of job definition:
# .---------------- minute (0 - 59)
# |  .------------- hour (0 - 23)
# |  |  .---------- day of month (1 - 31)
# |  |  |  .------- month (1 - 12) OR jan,feb,mar,apr ...
# |  |  |  |  .---- day of week (0 - 6) (Sunday=0 or 7) OR sun,mon,tue,wed,thu,fri,sat
# |  |  |  |  |
# *  *  *  *  * user-name command to be executed
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
47 6\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }
52 6\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }
#
"""

# Its four entries: (line, cron, command), all run as root.
DEBIAN_ETC_CRONTAB_ENTRIES = [
    (18, "17 * * * *", "cd / && run-parts --report /etc/cron.hourly"),
    (19, "25 6 * * *",
     "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }"),
    (20, "47 6 * * 7",
     "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }"),
    (21, "52 6 1 * *",
     "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }"),
]
