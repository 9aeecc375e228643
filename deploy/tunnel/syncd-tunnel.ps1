<#
.SYNOPSIS
    syncd's reverse tunnel on a Windows PEC server (Windows Server 2019+, Windows 10+): the
    built-in OpenSSH client holds one port on the central rendezvous host that leads back to
    the PEC's PostgreSQL (127.0.0.1:5433). Nothing is opened on this server.

.DESCRIPTION
    The Windows twin of syncd-tunnel.service: the same ssh, the same options (ssh_config, read
    with -F by both), the same tunnel.env. Step by step, in Portuguese:
    docs/tunnel-municipio.pt-BR.md ("Servidor Windows").

    Everything lives in C:\ProgramData\syncd-tunnel (readable by SYSTEM and Administrators only):
        ssh_config    the ssh options (from the kit, unchanged)
        tunnel.env    TUNNEL_PORT, RENDEZVOUS_HOST, ... (what syncd's team sends)
        known_hosts   the rendezvous host's key, pinned (sent by syncd's team)
        id_ed25519    this server's key (made by `key`; the .pub goes to syncd's team)
        tunnel.log    what ssh said, with the time (the last 1 MB, and tunnel.log.1 before it)

    Why a Scheduled Task and not a service: ssh.exe does not speak the service control protocol
    (the Service Control Manager kills it after 30 s), and Windows has no built-in wrapper for
    a plain program (srvany, NSSM and WinSW are not part of Windows). A task that starts at
    boot, as SYSTEM, runs `syncd-tunnel.ps1 run`: a loop that restarts ssh 15 s after it exits,
    as systemd's Restart=on-failure with RestartSec=15s does. Task Scheduler's own "restart on
    failure" only acts when the task cannot be started, not when the program exits, so it guards
    the loop; a second trigger every 5 minutes (a new instance is never started while one runs)
    brings the loop back if it was ended.

.EXAMPLE
    # as Administrator, in the folder with the kit (ssh_config, tunnel.env, known_hosts, this file)
    powershell -ExecutionPolicy Bypass -File .\syncd-tunnel.ps1 key        # prints the public key
    powershell -ExecutionPolicy Bypass -File .\syncd-tunnel.ps1 install    # task installed, started
    powershell -ExecutionPolicy Bypass -File .\syncd-tunnel.ps1 status
    powershell -ExecutionPolicy Bypass -File .\syncd-tunnel.ps1 uninstall  # task removed, files kept
#>
param(
    [Parameter(Position = 0, Mandatory = $true)]
    [ValidateSet('key', 'install', 'status', 'uninstall', 'run')]
    [string]$Action
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3

$TaskName = 'syncd-tunnel'
$KitDir = Join-Path $env:ProgramData 'syncd-tunnel'
$Ssh = Join-Path $env:SystemRoot 'System32\OpenSSH\ssh.exe'
$SshKeygen = Join-Path $env:SystemRoot 'System32\OpenSSH\ssh-keygen.exe'
# the task runs Windows PowerShell 5.1, present on every Windows this kit is for
$PowerShell = Join-Path $env:SystemRoot 'System32\WindowsPowerShell\v1.0\powershell.exe'
$Log = Join-Path $KitDir 'tunnel.log'
$RestartSeconds = 15
# SIDs, not names: "SYSTEM" and "Administrators" are "SISTEMA" and "Administradores" on a
# Windows in Portuguese
$SystemSid = New-Object System.Security.Principal.SecurityIdentifier('S-1-5-18')
$AdminsSid = New-Object System.Security.Principal.SecurityIdentifier('S-1-5-32-544')

# tunnel.env's defaults, as syncd-tunnel.service's Environment= lines: the PEC's PostgreSQL
# listens on 127.0.0.1, port 5433
$Defaults = @{
    RENDEZVOUS_PORT = '22'
    RENDEZVOUS_USER = 'tunnel'
    DB_HOST         = '127.0.0.1'
    DB_PORT         = '5433'
}

function Read-TunnelEnv([string]$Path) {
    $values = $Defaults.Clone()
    foreach ($line in Get-Content -LiteralPath $Path -Encoding UTF8) {
        $line = $line.Trim()
        if ($line -eq '' -or $line.StartsWith('#')) { continue }
        $key, $value = $line -split '=', 2
        if ($null -eq $value) { throw "${Path}: not KEY=VALUE: $line" }
        $values[$key.Trim()] = $value.Trim()
    }
    foreach ($key in 'TUNNEL_PORT', 'RENDEZVOUS_HOST') {
        if (-not $values.ContainsKey($key) -or $values[$key] -eq '') {
            throw "${Path}: $key is empty (fill in what syncd's team sent)"
        }
    }
    if ($values['TUNNEL_PORT'] -notmatch '^\d+$') { throw "${Path}: TUNNEL_PORT is not a number" }
    return $values
}

function Get-SshArguments([hashtable]$Values) {
    $TunnelPort = $Values['TUNNEL_PORT']
    $RendezvousHost = $Values['RENDEZVOUS_HOST']
    $RendezvousPort = $Values['RENDEZVOUS_PORT']
    $RendezvousUser = $Values['RENDEZVOUS_USER']
    $DbHost = $Values['DB_HOST']
    $DbPort = $Values['DB_PORT']
    # the ssh command line: syncd-tunnel.service's ExecStart, word for word (a test holds the
    # two equal: one argument a line here)
    $SshArgs = @(
        '-N', '-T',
        '-F', "$KitDir\ssh_config",
        '-o', "UserKnownHostsFile=$KitDir\known_hosts",
        '-i', "$KitDir\id_ed25519",
        '-p', "$RendezvousPort",
        '-R', "127.0.0.1:${TunnelPort}:${DbHost}:${DbPort}",
        "$RendezvousUser@$RendezvousHost"
    )
    return $SshArgs
}

function Protect-Path([string]$Path) {
    # only SYSTEM (the task) and Administrators: Windows' ssh refuses a private key that others
    # may read ("UNPROTECTED PRIVATE KEY FILE")
    $acl = Get-Acl -LiteralPath $Path
    $acl.SetAccessRuleProtection($true, $false)
    foreach ($rule in @($acl.Access)) { [void]$acl.RemoveAccessRule($rule) }
    $acl.SetOwner($AdminsSid)
    foreach ($sid in $SystemSid, $AdminsSid) {
        $inherit = if ((Get-Item -LiteralPath $Path).PSIsContainer) { 'ContainerInherit,ObjectInherit' } else { 'None' }
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($sid, 'FullControl', $inherit, 'None', 'Allow')
        $acl.AddAccessRule($rule)
    }
    Set-Acl -LiteralPath $Path -AclObject $acl
}

function Assert-Administrator {
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw 'run PowerShell as Administrator'
    }
}

function Assert-OpenSsh {
    if (-not (Test-Path -LiteralPath $Ssh)) {
        throw ("the OpenSSH client is not installed ($Ssh): " +
            "Add-WindowsCapability -Online -Name OpenSSH.Client~~~~0.0.1.0")
    }
}

function New-KitDir {
    if (-not (Test-Path -LiteralPath $KitDir)) { [void](New-Item -ItemType Directory -Path $KitDir) }
    Protect-Path $KitDir
}

function Invoke-Key {
    if ($PSVersionTable.PSEdition -ne 'Desktop') {
        # PowerShell 7 passes an empty argument to a program differently, version to version
        throw 'run this with powershell.exe (Windows PowerShell 5.1), not pwsh'
    }
    Assert-Administrator
    Assert-OpenSsh
    New-KitDir
    $key = Join-Path $KitDir 'id_ed25519'
    if (-not (Test-Path -LiteralPath $key)) {
        # '""': an empty passphrase, as Windows PowerShell 5.1 (powershell.exe) passes it
        & $SshKeygen -q -t ed25519 -N '""' -C "municipio-$env:COMPUTERNAME" -f $key
        if ($LASTEXITCODE -ne 0) { throw "ssh-keygen failed ($LASTEXITCODE)" }
    }
    Protect-Path $key
    Write-Output 'Send this line (the PUBLIC key) to syncd''s team; id_ed25519 itself never leaves this server:'
    Get-Content -LiteralPath "$key.pub"
}

function Invoke-Install {
    Assert-Administrator
    Assert-OpenSsh
    New-KitDir
    foreach ($name in 'ssh_config', 'tunnel.env', 'known_hosts') {
        $here = Join-Path $PSScriptRoot $name
        if (Test-Path -LiteralPath $here) {
            if ((Resolve-Path $here).Path -ne (Join-Path $KitDir $name)) { Copy-Item -LiteralPath $here -Destination $KitDir -Force }
        }
        elseif (-not (Test-Path -LiteralPath (Join-Path $KitDir $name))) {
            throw "$name is missing: put it beside this script or in $KitDir"
        }
    }
    if (-not (Test-Path -LiteralPath (Join-Path $KitDir 'id_ed25519'))) {
        throw "no key in ${KitDir}: run 'syncd-tunnel.ps1 key' first and send the public key"
    }
    $script = Join-Path $KitDir 'syncd-tunnel.ps1'
    if ($PSCommandPath -ne $script) { Copy-Item -LiteralPath $PSCommandPath -Destination $script -Force }
    Get-ChildItem -LiteralPath $KitDir | ForEach-Object { Protect-Path $_.FullName }
    [void](Read-TunnelEnv (Join-Path $KitDir 'tunnel.env'))  # refuse a half-filled tunnel.env now

    $action = New-ScheduledTaskAction -Execute $PowerShell `
        -Argument "-NoProfile -NonInteractive -ExecutionPolicy Bypass -File `"$script`" run" `
        -WorkingDirectory $KitDir
    $atBoot = New-ScheduledTaskTrigger -AtStartup
    # every 5 minutes, for ever: starts the loop again if it was ended (never a second one)
    $every5 = New-ScheduledTaskTrigger -Once -At (Get-Date) -RepetitionInterval (New-TimeSpan -Minutes 5)
    $principal = New-ScheduledTaskPrincipal -UserId 'S-1-5-18' -LogonType ServiceAccount -RunLevel Highest
    $settings = New-ScheduledTaskSettingsSet -MultipleInstances IgnoreNew `
        -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) `
        -StartWhenAvailable -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -DontStopOnIdleEnd
    Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $atBoot, $every5 `
        -Principal $principal -Settings $settings `
        -Description 'syncd reverse tunnel: the central syncd reads this PEC database, read-only' -Force | Out-Null
    Start-ScheduledTask -TaskName $TaskName
    Write-Output "installed and started: task $TaskName (Get-ScheduledTask $TaskName; log $Log)"
}

function Invoke-Status {
    $task = Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue
    if ($null -eq $task) { Write-Output "task ${TaskName}: not installed"; exit 1 }
    $info = Get-ScheduledTaskInfo -TaskName $TaskName
    Write-Output "task ${TaskName}: $($task.State) (last start $($info.LastRunTime), result $($info.LastTaskResult))"
    $running = @(Get-CimInstance Win32_Process -Filter "Name = 'ssh.exe'" |
        Where-Object { $_.CommandLine -like "*$KitDir\ssh_config*" })
    Write-Output ("ssh: " + $(if ($running.Count -gt 0) { "running (pid $($running[0].ProcessId))" } else { 'not running' }))
    if (Test-Path -LiteralPath $Log) { Get-Content -LiteralPath $Log -Tail 15 }
    if ($task.State -ne 'Running' -or $running.Count -eq 0) { exit 1 }
}

function Invoke-Uninstall {
    Assert-Administrator
    $task = Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue
    if ($null -ne $task) {
        Stop-ScheduledTask -TaskName $TaskName
        Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false
    }
    Get-CimInstance Win32_Process -Filter "Name = 'ssh.exe'" |
        Where-Object { $_.CommandLine -like "*$KitDir\ssh_config*" } |
        ForEach-Object { Stop-Process -Id $_.ProcessId -Force }
    Write-Output "task $TaskName removed; the PEC is unchanged. The key and files stay in $KitDir (delete the folder to remove them)."
}

function Write-Log([string]$Text) {
    if ((Test-Path -LiteralPath $Log) -and (Get-Item -LiteralPath $Log).Length -gt 1MB) {
        Move-Item -LiteralPath $Log -Destination "$Log.1" -Force
    }
    Add-Content -LiteralPath $Log -Value "$(Get-Date -Format s) $Text" -Encoding UTF8
}

function Invoke-Run {
    # what the task runs: ssh, and ssh again 15 s after it exits, for ever
    $ErrorActionPreference = 'Continue'  # ssh's stderr lines are log lines, not errors
    while ($true) {
        try {
            $SshArgs = Get-SshArguments (Read-TunnelEnv (Join-Path $KitDir 'tunnel.env'))
            Write-Log "starting: ssh $($SshArgs -join ' ')"
            & $Ssh @SshArgs 2>&1 | ForEach-Object { Write-Log "$_" }
            Write-Log "ssh exited ($LASTEXITCODE); again in $RestartSeconds s"
        }
        catch {
            Write-Log "error: $_; again in $RestartSeconds s"
        }
        Start-Sleep -Seconds $RestartSeconds
    }
}

switch ($Action) {
    'key' { Invoke-Key }
    'install' { Invoke-Install }
    'status' { Invoke-Status }
    'uninstall' { Invoke-Uninstall }
    'run' { Invoke-Run }
}
