# NeuronOS first logon (runs once, elevated, from the setup medium; no drive letter is
# assumed anywhere): the account's password set never to expire, the copies of the answer
# file Setup cached (they hold the password) and the autologon password removed, WinFsp
# when the medium carries it (before the guest tools, which register the VirtIO-FS service
# only where WinFsp is installed), the virtio-win guest tools (drivers, QEMU guest agent,
# SPICE agent), the VirtIO-FS service set to start by itself when the VM has shared folders,
# the GPU vendor's driver when the medium carries it, then the Looking Glass host with its IVSHMEM driver when the medium carries it, then the
# stage "done". The host learns each stage through the guest agent.
$ErrorActionPreference = 'Continue'
$state = Join-Path $env:ProgramData 'NeuronOS'
New-Item -ItemType Directory -Force -Path $state | Out-Null
$log = Join-Path $state 'setup.log'
function Step([string] $stage, [string] $text) {
    Add-Content -Path $log -Value ('{0:s} {1}: {2}' -f (Get-Date), $stage, $text)
    Set-Content -Path (Join-Path $state 'stage') -Value $stage
}
function Find-OnAnyDrive([string] $relative) {
    foreach ($drive in Get-PSDrive -PSProvider FileSystem) {
        $candidate = Join-Path $drive.Root $relative
        if (Test-Path -LiteralPath $candidate) { return $candidate }
    }
    return $null
}
$medium = Split-Path -Parent (Split-Path -Parent $MyInvocation.MyCommand.Path)
$setup = Get-Content -Raw -LiteralPath (Join-Path $medium 'neuronos\setup.json') | ConvertFrom-Json

# Windows' default policy expires a password after 42 days: not this account's.
try {
    Set-LocalUser -Name $setup.user -PasswordNeverExpires $true -ErrorAction Stop
    Step 'account' "the password of $($setup.user) never expires"
} catch {
    & net.exe accounts /maxpwage:unlimited | Out-Null
    Step 'account' "passwords never expire (net accounts): $($_.Exception.Message)"
}
# Setup caches the answer file, password and all (Microsoft: "Windows Setup Automation
# Overview", implicit answer-file search; the Panther folders): remove every cached copy.
$cached = @()
foreach ($folder in @("$env:WINDIR\Panther", "$env:WINDIR\Panther\Unattend",
                      "$env:WINDIR\System32\Sysprep")) {
    foreach ($file in Get-ChildItem -LiteralPath $folder -Filter '*nattend*.xml' `
            -File -ErrorAction SilentlyContinue) {
        Remove-Item -LiteralPath $file.FullName -Force -ErrorAction SilentlyContinue
        if (-not (Test-Path -LiteralPath $file.FullName)) { $cached += $file.FullName }
    }
}
$winlogon = 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Winlogon'
Remove-ItemProperty -Path $winlogon -Name 'DefaultPassword' -ErrorAction SilentlyContinue
Set-ItemProperty -Path $winlogon -Name 'AutoAdminLogon' -Value '0' -ErrorAction SilentlyContinue
Step 'secrets' ("removed the cached answer files holding the password: " + `
    $(if ($cached) { $cached -join ', ' } else { 'none found' }) + '; autologon password cleared')

$winfsp = Join-Path $medium 'neuronos\winfsp.msi'
if (Test-Path -LiteralPath $winfsp) {
    Step 'winfsp' 'installing WinFsp (shared folders)'
    Start-Process -FilePath 'msiexec.exe' -ArgumentList '/i', "`"$winfsp`"", '/qn', '/norestart' -Wait
}

$tools = Find-OnAnyDrive 'virtio-win-guest-tools.exe'
if ($tools) {
    Step 'guest-tools' "installing $tools"
    Start-Process -FilePath $tools -ArgumentList '/install', '/quiet', '/norestart' -Wait
} else {
    Step 'guest-tools' 'the virtio-win disc was not found: no guest tools'
}

if ($setup.shares.Count -gt 0) {
    $viofs = "viofs\$($setup.virtio_folder)\amd64"
    $inf = Find-OnAnyDrive "$viofs\viofs.inf"
    if ($inf) {  # the guest tools install it too; pnputil makes sure
        & pnputil.exe /add-driver $inf /install | Out-Null
    }
    if (-not (Get-Service -Name 'VirtioFsSvc' -ErrorAction SilentlyContinue)) {
        $exe = Find-OnAnyDrive "$viofs\virtiofs.exe"
        if ($exe) {  # guest tools that did not register it: the service by hand
            $folder = Join-Path $env:ProgramFiles 'Virtio-Win\VioFS'
            New-Item -ItemType Directory -Force -Path $folder | Out-Null
            Copy-Item -LiteralPath $exe -Destination $folder -Force
            # New-Service, not sc.exe: PowerShell 5.1 drops the quotes of a quoted argument
            # to a native program, and an unquoted path with spaces is a hijackable service
            New-Service -Name 'VirtioFsSvc' -BinaryPathName "`"$folder\virtiofs.exe`"" `
                -StartupType Automatic -DependsOn 'WinFsp.Launcher', 'VirtioFsDrv' `
                -DisplayName 'VirtIO-FS Service' | Out-Null
        }
    }
    if (Get-Service -Name 'VirtioFsSvc' -ErrorAction SilentlyContinue) {
        Set-Service -Name 'VirtioFsSvc' -StartupType Automatic
        Start-Service -Name 'VirtioFsSvc' -ErrorAction SilentlyContinue
        Step 'shares' "VirtIO-FS service set to start by itself ($($setup.shares[0]))"
    } else {
        Step 'shares' 'no VirtIO-FS service: install WinFsp, then the guest tools again'
    }
}

$driver = Join-Path $medium 'neuronos\gpu-driver.exe'
if (Test-Path -LiteralPath $driver) {
    # the passed-through GPU as the guest sees it (PCI\VEN_10DE: NVIDIA, VEN_1002: AMD),
    # before its driver is in: "Microsoft Basic Display Adapter"
    $gpu = Get-CimInstance Win32_PnPEntity | Where-Object {
        $_.PNPDeviceID -match '^PCI\\VEN_([0-9A-F]{4})' -and
        $setup.gpu_driver_switches.PSObject.Properties.Name -contains $Matches[1] } |
        Select-Object -First 1
    if ($gpu -and $gpu.PNPDeviceID -match '^PCI\\VEN_([0-9A-F]{4})') {
        $switches = $setup.gpu_driver_switches.($Matches[1])
        Step 'gpu-driver' "installing the GPU driver for $($gpu.Name): gpu-driver.exe $switches"
        $run = Start-Process -FilePath $driver -ArgumentList $switches -Wait -PassThru
        Step 'gpu-driver' "the GPU driver's installer ended with code $($run.ExitCode)"
    } else {
        Step 'gpu-driver' 'no NVIDIA or AMD GPU seen: the driver was not installed'
    }
}

$lg = Join-Path $medium 'neuronos\looking-glass-host-setup.exe'
if (Test-Path -LiteralPath $lg) {
    Step 'looking-glass' 'installing the Looking Glass host and its IVSHMEM driver'
    Start-Process -FilePath $lg -ArgumentList '/S' -Wait
}

Step 'done' 'setup finished'
# The host reads the stage through the guest agent when it connects: reconnect it now.
Restart-Service -Name 'QEMU-GA' -ErrorAction SilentlyContinue
