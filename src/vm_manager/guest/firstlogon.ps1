# NeuronOS first logon (runs once, elevated, from the setup medium; no drive letter is
# assumed anywhere): the virtio-win guest tools (drivers, QEMU guest agent, SPICE agent),
# then the Looking Glass host with its IVSHMEM driver when the medium carries it, then the
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

$tools = Find-OnAnyDrive 'virtio-win-guest-tools.exe'
if ($tools) {
    Step 'guest-tools' "installing $tools"
    Start-Process -FilePath $tools -ArgumentList '/install', '/quiet', '/norestart' -Wait
} else {
    Step 'guest-tools' 'the virtio-win disc was not found: no guest tools'
}

$lg = Join-Path $medium 'neuronos\looking-glass-host-setup.exe'
if (Test-Path -LiteralPath $lg) {
    Step 'looking-glass' 'installing the Looking Glass host and its IVSHMEM driver'
    Start-Process -FilePath $lg -ArgumentList '/S' -Wait
}

Step 'done' 'setup finished'
# The host reads the stage through the guest agent when it connects: reconnect it now.
Restart-Service -Name 'QEMU-GA' -ErrorAction SilentlyContinue
