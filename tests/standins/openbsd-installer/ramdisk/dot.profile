#!/bin/sh
# OpenBSD installer stand-in: what distrib/miniroot/dot.profile (rev 1.52) does
# when bsd.rd's root shell starts. Behaviour follows it; the code is not
# OpenBSD's. Run by /init on the console (busybox ash).
#
#  - print the tty settings line, a blank line and the welcome line;
#  - (OpenBSD runs "/upgrade -ax" here, the sysupgrade(8) check: there is never
#    a /bsd.upgrade on a stand-in disk, so it is left out);
#  - if netbooted ("ifconfig netboot" succeeds on OpenBSD; here: the kernel
#    command line has osimage.bootmac=<mac>, which the vmd stand-in adds when
#    the VM was started with -B) or a /auto_install.conf or /auto_upgrade.conf
#    is in the ramdisk, and only the first time around: "Starting
#    non-interactive mode in 5 seconds..." and, if nothing was typed within
#    5 s, answer "a" by itself (after a newline);
#  - then ask "(I)nstall, (U)pgrade, (A)utoinstall or (S)hell? " until a
#    program succeeds; a failed one (e.g. an autoinstall error) comes back here.
export VNAME=7.8
export VERSION=78
export ARCH=amd64
export OBSD="OpenBSD/$ARCH $VNAME"
export PATH=/sbin:/bin:/usr/bin:/usr/sbin:/
umask 022

TIMEOUT_PERIOD_SEC=5

netbooted() {
    for arg in $(cat /proc/cmdline); do
        case $arg in osimage.bootmac=?*) return 0 ;; esac
    done
    return 1
}

if [ -z "${DONEPROFILE:-}" ]; then
    export DONEPROFILE=YES
    mkdir -p /tmp/ai /tmp/i
    chmod 755 /tmp/ai /tmp/i

    echo 'erase ^?, werase ^W, kill ^U, intr ^C, status ^T'
    stty werase '^W' intr '^C' kill '^U' erase '^?' 2>/dev/null
    printf '\nWelcome to the %s installation program.\n' "$OBSD"

    timeout=false
    if [ ! -f /tmp/ai/noai ] && { netbooted || [ -f /auto_install.conf ] || [ -f /auto_upgrade.conf ]; }; then
        echo "Starting non-interactive mode in $TIMEOUT_PERIOD_SEC seconds..."
        : > /tmp/ai/noai
        timeout=true
    fi

    while :; do
        printf '%s' '(I)nstall, (U)pgrade, (A)utoinstall or (S)hell? '
        if $timeout; then
            timeout=false
            # The real one kills its own read after the timeout and answers "a".
            if ! read -r -t "$TIMEOUT_PERIOD_SEC" REPLY; then
                echo
                REPLY=a
            fi
        elif ! read -r REPLY; then
            sleep 1         # console gone: do not spin
            continue
        fi

        case $REPLY in
            [aA]*) /autoinstall && break ;;
            [iI]*) /install && break ;;
            [uU]*) /upgrade && break ;;
            [sS]*) break ;;
        esac
    done
fi
